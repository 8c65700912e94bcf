"""record_action and recompute on the real store: the log is the truth, a band change is written
once as an ``intent_changed`` interaction, and profile["intent"] follows the score."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import delete

from app.insight import intent
from app.store.insight_models import CustomerIntent
from tests.insight.conftest import logged, profile_of


def act(svc, kind: str, key: str, who: str = "wm_c1", **extra):
    with svc.sessions.begin() as session:
        return intent.record_action(
            session,
            external_userid=who,
            kind=kind,
            advisor="sh01_a01",
            dealer="SH01",
            dedup_key=key,
            now=svc.clock.now(),
            settings=svc.settings,
            **extra,
        )


def stored(svc, who: str = "wm_c1") -> CustomerIntent | None:
    with svc.sessions() as session:
        return intent.current(session, who)


def test_band_changes_are_returned_and_logged_once(svc, customer) -> None:
    changes = [act(svc, "link_opened", f"open:{i}") for i in range(1, 6)]
    # 10, 20, 30 low; 40 medium from the fourth open; 50 still medium
    assert [c is not None for c in changes] == [False, False, False, True, False]
    assert changes[3] == intent.IntentChange("wm_c1", 40.0, "medium", "low", 30.0)
    change = act(svc, "favourite", "fav:1")
    assert change == intent.IntentChange("wm_c1", 70.0, "high", "medium", 50.0)

    rows = logged(svc, "intent_changed", "wm_c1")
    assert [(r.payload["previous_band"], r.payload["band"], r.payload["score"]) for r in rows] == [
        ("low", "medium", 40.0),
        ("medium", "high", 70.0),
    ]
    assert rows[1].dedup_key == "intent_changed:fav:1"
    assert rows[1].payload["cause"] == "favourite"
    assert (rows[1].advisor_userid, rows[1].dealer_code) == ("sh01_a01", "SH01")

    row = stored(svc)
    assert (row.score, row.band, row.counts) == (70.0, "high", {"link_opened": 5, "favourite": 1})
    assert row.band_changed_at == svc.clock.now()


def test_a_replayed_action_counts_once_and_changes_nothing(svc, customer) -> None:
    for i in range(1, 4):
        act(svc, "link_opened", f"open:{i}")
    assert act(svc, "link_opened", "open:4") is not None  # → medium
    for _ in range(3):
        assert act(svc, "link_opened", "open:4") is None
        assert act(svc, "link_opened", "open:2") is None
    assert len(logged(svc, "link_opened", "wm_c1")) == 4
    assert len(logged(svc, "intent_changed", "wm_c1")) == 1
    assert stored(svc).score == 40.0


def test_profile_intent_follows_the_score_and_keeps_the_rest(svc, customer) -> None:
    act(svc, "test_drive_booked", "dms:1")
    assert profile_of(svc, "wm_c1") == {
        "model": "RAV4",
        "city": "上海",
        "intent": 40.0,
        "intent_band": "medium",
    }
    act(svc, "store_visit", "dms:2")
    assert profile_of(svc, "wm_c1")["intent"] == 70.0
    assert profile_of(svc, "wm_c1")["intent_band"] == "high"


def test_a_customer_not_in_the_store_is_scored_without_a_profile(svc) -> None:
    assert act(svc, "test_drive_booked", "dms:x", who="wm_unknown") is not None
    assert stored(svc, "wm_unknown").band == "medium"


def test_unweighted_kinds_are_logged_but_do_not_score(svc, customer) -> None:
    assert act(svc, "brochure_printed", "x:1") is None
    assert len(logged(svc, "brochure_printed")) == 1
    assert stored(svc) is None


def test_the_score_is_rebuilt_from_the_log(svc, customer) -> None:
    for i in range(7):
        act(svc, "link_opened", f"open:{i}")
    act(svc, "enquiry", "enq:1", occurred_at=svc.clock.now() - timedelta(days=3))
    with svc.sessions.begin() as session:
        session.execute(delete(CustomerIntent))
    with svc.sessions.begin() as session:
        state = intent.recompute(session, "wm_c1", svc.clock.now(), svc.settings)
    assert (state.score, state.band) == (65.0, "medium")
    assert state.counts == {"link_opened": 7, "enquiry": 1}
    assert state.band_changed and state.previous_band == "low"  # nothing stored: measured from 0
    assert stored(svc).score == 65.0
    assert len(logged(svc, "intent_changed")) == 1  # recompute reports, record_action writes


def test_a_long_action_key_gives_a_bounded_change_key(svc, customer) -> None:
    key = "dms:" + "k" * 185
    act(svc, "test_drive_booked", key)
    (row,) = logged(svc, "intent_changed")
    assert len(row.dedup_key) <= 191 and row.dedup_key.startswith("intent_changed:sha256:")
    assert act(svc, "test_drive_booked", key) is None


def test_concurrent_actions_lose_no_count_and_report_one_change(svc, customer) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def open_link(i: int) -> None:
        try:
            start.wait()
            act(svc, "link_opened", f"open:{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_link, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    row = stored(svc)
    assert (row.score, row.band, row.counts) == (50.0, "medium", {"link_opened": 8})
    assert [r.payload["band"] for r in logged(svc, "intent_changed")] == ["medium"]

"""Card analytics: figures per card and step from enrollments, step runs and interactions (SQL
aggregates), `scrm sop stats` (table and --json) and GET /api/sop/stats (HQ token)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import update

from app.sop import stats
from app.sop.enrollment import enroll
from app.store.sop_models import SopEnrollment, SopStepRun
from tests.sop.test_enrollment import add_customer, card_body, load, record, seed_roster

HQ = {"Authorization": "Bearer sandbox-hq-token"}


def _run(svc, enrollment_id: int, step: int, at: datetime, status: str = "done") -> None:
    with svc.sessions.begin() as session:
        session.add(
            SopStepRun(
                enrollment_id=enrollment_id,
                card_id="welcome",
                step_index=step,
                status=status,
                ran_at=at,
                reminder_msgid=f"m{enrollment_id}-{step}" if status == "done" else None,
            )
        )


def _set(svc, enrollment_id: int, **values) -> None:
    with svc.sessions.begin() as session:
        session.execute(update(SopEnrollment).where(SopEnrollment.id == enrollment_id).values(**values))


def scenario(svc, clock) -> dict[str, int]:
    """Four customers in `welcome` (3 steps), one in `other`; runs, exits, touches, stage changes."""
    seed_roster(svc)
    load(svc, card_body())
    load(svc, card_body("other", title="其他"))
    for ext in ("wm1", "wm2", "wm3", "wm4"):
        add_customer(svc, ext)
    record(svc, "stage_changed", "wm4", **{"from": "prospect", "to": "intent"})  # before enrolling
    clock.advance(1)
    t0 = clock.now()
    ids = {ext: enroll(svc, "welcome", ext).id for ext in ("wm1", "wm2", "wm3", "wm4")}
    enroll(svc, "other", "wm1")

    clock.advance(timedelta(minutes=5))
    for ext in ("wm1", "wm2", "wm3"):
        _run(svc, ids[ext], 0, clock.now())
    _run(svc, ids["wm4"], 0, clock.now(), "skipped")
    clock.advance(timedelta(minutes=5))
    record(svc, "reply_sent", "wm1", card="welcome", step=0)
    record(svc, "reply_sent", "wm2", card="welcome", step=0)
    record(svc, "reply_sent", "wm2", card="welcome", step=0)
    record(svc, "reply_sent", "wm1", card="other", step=0)
    record(svc, "reply_sent", "wm1")  # no card: not counted
    record(svc, "link_opened", "wm1", card="welcome", step=0)
    record(svc, "link_opened", "wm3", card="welcome", step=0)
    record(svc, "stage_changed", "wm1", **{"from": "prospect", "to": "intent"})  # after step 1
    record(
        svc, "stage_changed", "wm2", **{"from": "prospect", "to": "intent", "by": "sop:welcome"}
    )  # its own
    record(svc, "stage_changed", "wm3", **{"from": "prospect", "to": "lost"})

    clock.advance(timedelta(days=1))
    _run(svc, ids["wm1"], 1, clock.now())
    _run(svc, ids["wm4"], 1, clock.now())
    record(svc, "reply_sent", "wm1", card="welcome", step=1)
    record(svc, "answer_given", "wm4", card="welcome", step=1)
    clock.advance(timedelta(days=2))
    _run(svc, ids["wm4"], 2, clock.now())
    record(svc, "stage_changed", "wm4", **{"from": "intent", "to": "owner"})  # after the last step

    _set(svc, ids["wm1"], next_step=2, next_due_at=t0 + timedelta(days=30))
    _set(svc, ids["wm2"], next_step=1, next_due_at=clock.now() - timedelta(days=2))  # overdue
    _set(svc, ids["wm3"], next_step=1, next_due_at=None, status="exited", exit_reason="customer_left")
    _set(svc, ids["wm4"], next_step=3, next_due_at=None, status="completed")
    return ids


def test_figures_per_card_and_step(svc, clock) -> None:
    scenario(svc, clock)
    with svc.sessions() as session:
        data = stats.card_stats(session, clock.now())
    cards = {c["card_id"]: c for c in data["cards"]}
    assert list(cards) == ["other", "welcome"]
    welcome = cards["welcome"]
    assert {
        k: welcome[k] for k in ("title", "version", "enrolled", "active", "completed", "exited", "due")
    } == {
        "title": "新客欢迎",
        "version": 1,
        "enrolled": 4,
        "active": 2,
        "completed": 1,
        "exited": 1,
        "due": 1,
    }
    assert (welcome["reminded"], welcome["replies_sent"]) == (6, 4)
    assert welcome["stage_reached"] == 3  # wm1 (intent), wm3 (lost), wm4 (owner); wm2's was the card's own
    assert welcome["stage_reached_by_stage"] == {"intent": 1, "lost": 1, "owner": 1}
    assert welcome["exit_reasons"] == {"customer_left": 1}
    steps = welcome["steps"]
    assert [s["at"] for s in steps] == ["day 0", "+1d 10:00", "+3d"]

    def column(name: str) -> list[int]:
        return [s[name] for s in steps]

    assert column("waiting") == [0, 1, 1]
    assert column("due") == [0, 1, 0]
    assert column("ran") == [3, 2, 1]
    assert column("reminded") == [3, 2, 1]
    assert column("skipped") == [1, 0, 0]
    assert column("replies_sent") == [3, 1, 0]
    assert column("links_opened") == [2, 0, 0]
    assert column("answers_given") == [0, 1, 0]
    assert column("stage_reached") == [2, 0, 1]  # wm1, wm3 after step 1; wm4 after step 3
    assert column("dropped") == [0, 1, 0]

    other = cards["other"]
    assert (other["enrolled"], other["active"], other["due"], other["replies_sent"]) == (1, 1, 1, 1)
    assert other["stage_reached"] == 1 and other["steps"][0]["stage_reached"] == 0  # before its first step

    with svc.sessions() as session:
        only = stats.card_stats(session, clock.now(), "other")
    assert [c["card_id"] for c in only["cards"]] == ["other"]


def test_scrm_sop_stats(svc, clock, scrm) -> None:
    scenario(svc, clock)
    table = scrm("sop", "stats")
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[5].startswith(
        "welcome · 新客欢迎 (version 1): 4 enrolled, 2 active, 1 completed, 1 exited (customer_left 1)"
    )
    assert lines[6].split() == [
        "step",
        "at",
        "waiting",
        "due",
        "reminded",
        "skipped",
        "replies",
        "links",
        "answers",
        "stage",
        "dropped",
    ]
    assert lines[7].split() == ["1", "day", "0", "0", "0", "3", "1", "3", "2", "0", "2", "0"]
    as_json = json.loads(scrm("sop", "stats", "--json", "--card", "welcome").output)
    assert [c["card_id"] for c in as_json["cards"]] == ["welcome"]


def test_the_api_needs_the_hq_token(svc, clock, client) -> None:
    scenario(svc, clock)
    assert client.get("/api/sop/stats").status_code == 401
    assert client.get("/api/sop/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = client.get("/api/sop/stats", headers=HQ)
    assert answer.status_code == 200
    body = answer.get_json()
    welcome = next(c for c in body["cards"] if c["card_id"] == "welcome")
    assert welcome["enrolled"] == 4 and welcome["steps"][0]["replies_sent"] == 3
    assert set(welcome["steps"][0]) == {"index", "at", *stats.STEP_FIGURES}
    one = client.get("/api/sop/stats?card=other", headers=HQ).get_json()
    assert [c["card_id"] for c in one["cards"]] == ["other"]
    missing = client.get("/api/sop/stats?card=nope", headers=HQ)
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"


def test_no_cards(svc, clock, scrm) -> None:
    assert scrm("sop", "stats").output.strip() == "no SOP cards loaded and no enrollments (scrm sop load)"

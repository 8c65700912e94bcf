"""Enrollment from the interaction log: once per card per customer (the same trigger twice, two
consumers at once, a consumer that runs again), audiences, version pinning, triggers of every
kind, exits (churn, removal, stage change), hand-overs, no_reply, manual enrollment and the
schedule of the first step. The helpers at the top are shared with test_runner and test_stats."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from app.sop import enrollment, triggers
from app.sop.card import Card
from app.sop.enrollment import TriggerEvent, active_enrollments, enroll, try_enroll
from app.sop.versions import store_card
from app.store import customers, interactions
from app.store.interactions import NewInteraction
from app.store.models import CorpTag, FollowRelation, Interaction
from app.store.sop_models import ConsumerCursor, SopEnrollment
from tests.support import roster

CHINA_10AM = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # the FrozenClock's start: 10:00 in Shanghai
_keys = itertools.count(1)

TAGS = {
    "客户阶段": ["潜客", "意向", "战败", "车主"],
    "意向车型": ["RAV4", "COROLLA"],
    "活动": ["试驾专场"],
}


# -- shared helpers ---------------------------------------------------------------------------------


def seed_roster(svc, tag_ids: dict[str, str] | None = None) -> None:
    """Two dealers (SH01 east, GZ01 south), three advisors; the corp tags (ids ``t-组-名`` unless
    given, e.g. the sandbox's)."""
    now = svc.clock.now()
    roster.store(
        svc,
        [
            roster.dealer(code, now, name=name, region=region, models=["RAV4", "COROLLA"])
            for code, name, region in (("SH01", "一汽丰田上海浦东店", "east"), ("GZ01", "广州天河店", "south"))
        ],
        [
            roster.advisor(userid, now, name=name, dealer=dealer)
            for userid, name, dealer in (("sh_a", "王芳", "SH01"), ("sh_b", "李强", "SH01"), ("gz_a", "陈明", "GZ01"))
        ],
    )
    with svc.sessions.begin() as session:
        if tag_ids is None:
            for group, names in TAGS.items():
                for name in names:
                    session.add(
                        CorpTag(
                            tag_id=f"t-{group}-{name}",
                            group_id=f"g-{group}",
                            group_name=group,
                            name=name,
                            synced_at=now,
                        )
                    )


def tag_id(name: str) -> str:
    group, tag = name.split(":")
    return f"t-{group}-{tag}"


def add_customer(
    svc,
    ext: str,
    advisor: str = "sh_a",
    *,
    name: str = "张先生",
    profile: dict[str, Any] | None = None,
    tags: list[str] = (),
    dealer: str = "SH01",
    tag_ids: list[str] | None = None,
) -> None:
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        customers.upsert_customer(
            session, ext, now, name=name, profile={"segment": "prospect", "model": "RAV4", **(profile or {})}
        )
        customers.upsert_relation(
            session,
            advisor,
            ext,
            now,
            dealer_code=dealer,
            tag_ids=tag_ids if tag_ids is not None else [tag_id(t) for t in tags],
        )


def record(svc, kind: str, ext: str | None, advisor: str | None = "sh_a", **payload: Any) -> int:
    """Append one interaction as a handler would; returns its id."""
    now = svc.clock.now()
    key = f"test:{next(_keys)}"
    with svc.sessions.begin() as session:
        interactions.append(
            session,
            [
                NewInteraction(
                    kind=kind,
                    occurred_at=now,
                    dedup_key=key,
                    advisor_userid=advisor,
                    external_userid=ext,
                    payload=payload,
                )
            ],
            now,
        )
        return session.scalar(select(Interaction.id).where(Interaction.dedup_key == key))


def card_body(card_id: str = "welcome", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": card_id,
        "title": "新客欢迎",
        "audience": {"stages": ["prospect"], "tags": "not 客户阶段:车主"},
        "trigger": {"on": "contact_added"},
        "steps": [
            {
                "at": "day 0",
                "reminder": "问候 {customer}，介绍 {model}",
                "quick_replies": [
                    {"type": "text", "text": "{customer}您好，我是{dealer}的{advisor}"},
                    {"type": "link", "title": "{model} 亮点", "url": "https://brand.example.com/{model}"},
                ],
            },
            {"at": "+1d 10:00", "reminder": "回访 {customer}"},
            {"at": "+3d", "reminder": "邀约 {customer} 试驾"},
        ],
    }
    body.update(changes)
    return body


def load(svc, body: dict[str, Any]):
    return store_card(svc, Card.model_validate(body), f"test/{body['id']}.yaml")


def enrollments(svc, **where: Any) -> list[SopEnrollment]:
    with svc.sessions() as session:
        stmt = select(SopEnrollment).order_by(SopEnrollment.id)
        for column, value in where.items():
            stmt = stmt.where(getattr(SopEnrollment, column) == value)
        return list(session.scalars(stmt))


def kinds(svc, ext: str, prefix: str = "sop_") -> list[str]:
    with svc.sessions() as session:
        return list(
            session.scalars(
                select(Interaction.kind)
                .where(Interaction.external_userid == ext, Interaction.kind.like(f"{prefix}%"))
                .order_by(Interaction.id)
            )
        )


# -- once per card per customer -----------------------------------------------------------------


def test_an_added_customer_is_enrolled_once_whatever_repeats(svc, clock) -> None:
    seed_roster(svc)
    version = load(svc, card_body())
    add_customer(svc, "wm1")
    source = record(svc, "added", "wm1")
    report = triggers.consume(svc)
    assert (report.read, report.fired, report.enrolled) == (1, 1, 1)

    [row] = enrollments(svc)
    assert (row.card_id, row.card_version_id, row.external_userid, row.advisor_userid, row.dealer_code) == (
        "welcome",
        version.version_id,
        "wm1",
        "sh_a",
        "SH01",
    )
    assert (row.status, row.next_step, row.trigger_kind, row.trigger_interaction_id) == (
        "active",
        0,
        "contact_added",
        source,
    )
    assert row.enrolled_at == clock.now() and row.next_due_at == clock.now()  # day 0 at 10:00: at once

    # The same trigger again (a second add), and the whole feed read again from the start.
    record(svc, "added", "wm1")
    assert triggers.consume(svc).enrolled == 0
    with svc.sessions.begin() as session:
        session.execute(update(ConsumerCursor).values(cursor=None))
    again = triggers.consume(svc)
    assert again.read >= 3 and again.enrolled == 0
    assert len(enrollments(svc)) == 1
    assert kinds(svc, "wm1") == ["sop_enrolled"]


def test_two_consumers_at_once_enroll_once(svc) -> None:
    seed_roster(svc)
    load(svc, card_body())
    for n in range(20):
        add_customer(svc, f"wm{n}")
        record(svc, "added", f"wm{n}")
    reports: list[triggers.ConsumeReport] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def consumer() -> None:
        try:
            barrier.wait()
            reports.append(triggers.consume_all(svc, limit=7))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=consumer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sum(r.enrolled for r in reports) == 20
    # Each interaction (20 adds, then the 20 sop_enrolled) was read by exactly one consumer.
    assert sum(r.read for r in reports) == 40
    assert len(enrollments(svc)) == 20
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).where(Interaction.kind == "sop_enrolled")) == 20


def test_enrollment_needs_an_active_relation(svc) -> None:
    seed_roster(svc)
    load(svc, card_body())
    add_customer(svc, "wm1")
    with svc.sessions.begin() as session:
        customers.end_relation(session, "sh_a", "wm1", "removed", "advisor", svc.clock.now())
    record(svc, "added", "wm1")
    assert triggers.consume(svc).enrolled == 0


# -- audiences ----------------------------------------------------------------------------------


def test_only_customers_in_the_audience_are_enrolled(svc) -> None:
    seed_roster(svc)
    audience = {
        "stages": ["prospect"],
        "models": ["RAV4"],
        "regions": ["east"],
        "tags": "not 客户阶段:车主",
        "intent_bands": ["medium", "high"],
    }
    load(svc, card_body(audience=audience))
    add_customer(svc, "in", profile={"intent": 55})
    add_customer(svc, "owner-tag", profile={"intent": 55}, tags=["客户阶段:车主"])
    add_customer(svc, "other-stage", profile={"intent": 55, "segment": "lost"})
    add_customer(svc, "other-model", profile={"intent": 55, "model": "COROLLA"})
    add_customer(svc, "other-region", "gz_a", profile={"intent": 55}, dealer="GZ01")
    add_customer(svc, "low-intent", profile={"intent": 10})
    add_customer(svc, "band-set", profile={"intent": 10, "intent_band": "high"})
    for ext, advisor in (
        ("in", "sh_a"),
        ("owner-tag", "sh_a"),
        ("other-stage", "sh_a"),
        ("other-model", "sh_a"),
        ("other-region", "gz_a"),
        ("low-intent", "sh_a"),
        ("band-set", "sh_a"),
    ):
        record(svc, "added", ext, advisor)
    triggers.consume(svc)
    assert sorted(e.external_userid for e in enrollments(svc)) == ["band-set", "in"]


def test_try_enroll_says_why_not(svc) -> None:
    seed_roster(svc)
    load(svc, card_body())
    add_customer(svc, "owner", tags=["客户阶段:车主"])
    add_customer(svc, "ok")
    outcome = try_enroll(svc, "welcome", "owner")
    assert outcome.status == "not_in_audience" and "客户阶段:车主" in outcome.detail
    assert try_enroll(svc, "nope", "ok").status == "unknown_card"
    assert try_enroll(svc, "welcome", "ghost").status == "no_relation"
    assert try_enroll(svc, "welcome", "ok", advisor_userid="sh_b").status == "no_relation"
    first = try_enroll(svc, "welcome", "ok")
    assert first.status == "enrolled" and first.enrollment.trigger_kind == "manual"
    assert try_enroll(svc, "welcome", "ok").status == "already_enrolled"
    assert enroll(svc, "welcome", "ok") is None


# -- versions -------------------------------------------------------------------------------------


def test_running_enrollments_keep_their_version_new_ones_get_the_new_one(svc) -> None:
    seed_roster(svc)
    v1 = load(svc, card_body())
    add_customer(svc, "early")
    record(svc, "added", "early")
    triggers.consume(svc)

    changed = card_body()
    changed["steps"] = [*changed["steps"], {"at": "+7d 19:00", "reminder": "第 7 天轻触达 {customer}"}]
    v2 = load(svc, changed)
    assert (v1.version, v2.version) == (1, 2)
    add_customer(svc, "late")
    record(svc, "added", "late")
    triggers.consume(svc)

    pinned = {e.external_userid: e.card_version_id for e in enrollments(svc)}
    assert pinned == {"early": v1.version_id, "late": v2.version_id}
    with svc.sessions() as session:
        [(early, early_card)] = active_enrollments(session, "early")
        [(late, late_card)] = active_enrollments(session, "late", "sh_a")
        assert active_enrollments(session, "late", "sh_b") == []
    assert (len(early_card.steps), len(late_card.steps)) == (3, 4)
    assert early.card_id == late.card_id == "welcome"


# -- triggers of every kind -------------------------------------------------------------------------


def test_each_trigger_kind_enrolls_in_its_cards(svc) -> None:
    seed_roster(svc)
    everyone = {"audience": {}}
    load(svc, card_body("on-tag", trigger={"on": "tag_added", "tag": "活动:试驾专场"}, **everyone))
    load(svc, card_body("on-stage", trigger={"on": "stage_changed", "stage": "intent"}, **everyone))
    load(svc, card_body("on-band", trigger={"on": "intent_band", "band": "high"}, **everyone))
    load(svc, card_body("on-lead", trigger={"on": "lead_assigned"}, **everyone))
    load(svc, card_body("on-manual", trigger={"on": "manual"}, **everyone))
    for ext in ("tagged", "edited", "staged", "banded", "linked", "unlinked"):
        add_customer(svc, ext)

    record(svc, "tagged", "tagged", tag_ids=["x"], tags=["活动:试驾专场"])
    record(svc, "edited", "edited", tags=["意向车型:RAV4", "活动：试驾专场"])  # full-width colon
    record(svc, "tagged", "unlinked", tags=["意向车型:RAV4"])  # another tag: nothing
    record(svc, "stage_changed", "staged", **{"from": "prospect", "to": "intent"})
    record(svc, "stage_changed", "unlinked", **{"from": "prospect", "to": "lost"})
    record(svc, "intent_changed", "banded", score=80, band="high", previous_band="medium")
    record(svc, "intent_changed", "unlinked", score=81, band="high", previous_band="high")  # no crossing
    record(svc, "lead_linked", "linked", lead_id=7, by="state")
    record(svc, "lead_imported", None, lead_id=8)  # no WeCom customer yet: nobody to enroll
    record(svc, "added", "unlinked")  # no card has contact_added here
    triggers.consume(svc)

    enrolled = {(e.card_id, e.external_userid, e.trigger_kind) for e in enrollments(svc)}
    assert enrolled == {
        ("on-tag", "tagged", "tag_added"),
        ("on-tag", "edited", "tag_added"),
        ("on-stage", "staged", "stage_changed"),
        ("on-band", "banded", "intent_band"),
        ("on-lead", "linked", "lead_assigned"),
    }
    assert enroll(svc, "on-manual", "unlinked").trigger_kind == "manual"


def test_a_stage_trigger_judges_the_audience_at_the_new_stage(svc) -> None:
    seed_roster(svc)
    load(
        svc,
        card_body("lost", trigger={"on": "stage_changed", "stage": "lost"}, audience={"stages": ["lost"]}),
    )
    add_customer(svc, "wm1")  # the profile still says prospect: the stage_changed says lost
    record(svc, "stage_changed", "wm1", **{"from": "prospect", "to": "lost"})
    assert triggers.consume(svc).enrolled == 1


# -- exits and hand-overs ---------------------------------------------------------------------------


def test_a_customer_who_leaves_exits_the_cards_that_say_so(svc) -> None:
    seed_roster(svc)
    load(svc, card_body("leave"))
    load(svc, card_body("stay", exit={"on_customer_left": False}))
    add_customer(svc, "wm1")
    add_customer(svc, "wm1", "sh_b")
    record(svc, "added", "wm1", "sh_a")
    triggers.consume(svc)
    assert {(e.card_id, e.advisor_userid) for e in enrollments(svc)} == {("leave", "sh_a"), ("stay", "sh_a")}

    record(svc, "churned", "wm1", "sh_b", by="customer")  # another advisor: nothing here
    assert triggers.consume(svc).exited == 0
    record(svc, "churned", "wm1", "sh_a", by="customer")
    assert triggers.consume(svc).exited == 1
    status = {e.card_id: (e.status, e.exit_reason, e.next_due_at) for e in enrollments(svc)}
    assert status["leave"] == ("exited", "customer_left", None)
    assert status["stay"][0] == "active"
    assert kinds(svc, "wm1").count("sop_exited") == 1

    record(svc, "deleted", "wm1", "sh_a", by="advisor")  # removed: every card ends
    assert triggers.consume(svc).exited == 1
    assert {e.status for e in enrollments(svc)} == {"exited"}
    assert {e.exit_reason for e in enrollments(svc)} == {"customer_left", "removed"}


def test_a_stage_change_ends_enrollments_whose_audience_the_customer_left(svc) -> None:
    seed_roster(svc)
    load(svc, card_body("prospects"))  # audience: prospect
    load(svc, card_body("anyone", audience={}))
    load(svc, card_body("keep-on", exit={"on_stage_change": False}))
    load(svc, card_body("self", audience={"stages": ["prospect"]}))
    add_customer(svc, "wm1")
    record(svc, "added", "wm1")
    triggers.consume(svc)
    assert len(enrollments(svc)) == 4

    record(svc, "stage_changed", "wm1", **{"from": "prospect", "to": "intent", "by": "sop:self"})
    assert triggers.consume(svc).exited == 1
    assert {e.card_id for e in enrollments(svc, status="exited")} == {"prospects"}
    assert enrollments(svc, card_id="prospects")[0].exit_reason == "stage_changed"


def test_a_completed_hand_over_moves_the_enrollments(svc) -> None:
    seed_roster(svc)
    load(svc, card_body())
    add_customer(svc, "wm1", "sh_a")
    record(svc, "added", "wm1", "sh_a")
    triggers.consume(svc)
    record(svc, "transfer_completed", "wm1", "gz_a", **{"from": "sh_a", "to": "gz_a"})
    assert triggers.consume(svc).moved == 1
    [row] = enrollments(svc)
    assert (row.advisor_userid, row.dealer_code, row.status) == ("gz_a", "GZ01", "active")


# -- schedule and no_reply -------------------------------------------------------------------------


def test_the_first_step_is_scheduled_in_working_hours(svc, clock) -> None:
    seed_roster(svc)
    load(svc, card_body())
    clock.advance(timedelta(hours=11, minutes=30))  # 21:30 in Shanghai: after working hours
    add_customer(svc, "wm1")
    record(svc, "added", "wm1")
    triggers.consume(svc)
    [row] = enrollments(svc)
    assert row.next_due_at == datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 09:00 the next morning


def test_silent_customers_are_enrolled_in_no_reply_cards(svc, clock) -> None:
    seed_roster(svc)
    load(svc, card_body("silent", trigger={"on": "no_reply", "days": 3}, audience={}))
    for ext in ("quiet", "chatty", "new", "sop-only"):
        add_customer(svc, ext)
        record(svc, "added", ext)
    clock.advance(timedelta(days=2))
    record(svc, "reply_sent", "chatty")
    clock.advance(timedelta(days=1, hours=1))
    record(svc, "sop_reminded", "sop-only")  # SOP's own interactions are no reply
    add_customer(svc, "new")  # still active; added 3 days ago
    with svc.sessions.begin() as session:  # "new" was (re-)added yesterday
        session.execute(
            update(FollowRelation)
            .where(FollowRelation.external_userid == "new")
            .values(added_at=clock.now() - timedelta(days=1))
        )
    assert triggers.scan_no_reply(svc, limit=2) == 1  # quiet (the first two relations)
    assert triggers.scan_no_reply(svc, limit=2) == 1  # sop-only (the next two)
    assert triggers.scan_no_reply(svc, limit=2) == 0  # wrapped around: nothing new
    assert sorted(e.external_userid for e in enrollments(svc)) == ["quiet", "sop-only"]
    assert {e.trigger_kind for e in enrollments(svc)} == {"no_reply"}


def test_band_of_reads_the_band_or_the_score(svc) -> None:
    assert enrollment.band_of({"intent_band": "medium", "intent": 99}) == "medium"
    assert [enrollment.band_of({"intent": s}) for s in (0, 39.9, 40, 69.9, 70, 100)] == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]
    assert enrollment.band_of({}) is None
    assert enrollment.band_of({"intent": True}) is None
    assert TriggerEvent("no_reply", "x", days=5).fires(
        Card.model_validate(card_body(trigger={"on": "no_reply", "days": 5}))
    )


def test_scrm_sop_enroll(svc, scrm) -> None:
    seed_roster(svc)
    load(svc, card_body())
    add_customer(svc, "wm1")
    result = scrm("sop", "enroll", "welcome", "wm1")
    assert result.exit_code == 0 and result.output.startswith("enrolled: enrollment")
    result = scrm("sop", "enroll", "welcome", "wm1")
    assert result.exit_code == 1 and result.output.startswith("already_enrolled")
    result = scrm("sop", "enroll", "welcome", "wm2")
    assert result.exit_code == 1 and "no active follow relation" in result.output

"""Intake end to end: the sandbox plays WeCom (API and platform), our app on a real socket
receives its callbacks, a real worker handles them against the sandbox's API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from werkzeug.serving import make_server

from app.intake import assign
from app.sandbox import SandboxConfig, SandboxServer, run_sandbox
from app.store.models import (
    Assignment,
    Customer,
    Effect,
    FollowRelation,
    InboxEvent,
    InboxStatus,
    Interaction,
)
from tests.support import roster
from workers.queues import enqueue_event

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


@pytest.fixture()
def wecom() -> Iterator[SandboxServer]:
    with run_sandbox(SandboxConfig(seed=11, retry_delay=0.05)) as server:
        yield server


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom: SandboxServer) -> dict[str, Any]:
    return {**app_config, "WECOM_API_BASE": wecom.api_base}


@pytest.fixture()
def corp(app, svc, wecom: SandboxServer) -> SandboxServer:
    """Our app on a socket as the sandbox's callback target; one roster in both places."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    wecom.state.configure(callback_url=f"http://127.0.0.1:{server.port}/wecom/callback")
    _seed_roster(svc)
    for userid, name in ADVISORS.items():
        wecom.state.add_employee(userid, name)
    yield wecom
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


ADVISORS = {"sh_rc": "前台小周", "sh_a": "王芳", "sh_b": "李强", "sh_c": "陈静", "sh_mgr": "刘经理"}


def _seed_roster(svc) -> None:
    now = svc.clock.now()
    profiles = {
        "sh_rc": dict(models=[], seniority=0),
        "sh_a": dict(models=["RAV4"], seniority=3),
        "sh_b": dict(models=["COROLLA"], seniority=1),
        "sh_c": dict(models=["COROLLA", "RAV4"], seniority=1, active=False),
    }
    roster.store(
        svc,
        [
            roster.dealer(
                "SH01", now, name="一汽丰田上海浦东店", lat=31.22, lon=121.54, models=["RAV4", "COROLLA"],
                manager="sh_mgr",
            )
        ],
        [
            roster.advisor(userid, now, name=ADVISORS[userid], languages=["普通话"], segments=["prospect"], **extra)
            for userid, extra in profiles.items()
        ],
    )


def _way(corp: SandboxServer, userid: str, state: str) -> str:
    return corp.state.add_contact_way({"type": 1, "scene": 2, "state": state, "user": [userid]}).config_id


def _kinds(svc, ext: str) -> list[str]:
    with svc.sessions() as session:
        return list(
            session.scalars(
                select(Interaction.kind).where(Interaction.external_userid == ext).order_by(Interaction.id)
            )
        )


def _welcomes(corp: SandboxServer, ext: str) -> list[Any]:
    return [w for w in corp.state.welcome_messages if w.external_userid == ext]


def _relation_tags(corp: SandboxServer, userid: str, ext: str) -> set[str]:
    relation = corp.state.relations[(userid, ext)]
    return {
        f"{corp.state.tag_groups[corp.state.tags[t].group_id].group_name}:{corp.state.tags[t].name}"
        for t in relation.tag_ids
    }


def test_a_shared_store_code_hands_the_customer_to_the_model_expert(corp: SandboxServer, svc, work) -> None:
    added = corp.platform.customer_adds(config_id=_way(corp, "sh_rc", "qr.SH01.RAV4"), duplicate=True)
    ext = added.data["external_userid"]
    assert added.report().acknowledged
    work()

    with svc.sessions() as session:
        event = session.scalars(select(InboxEvent)).one()
        assert (event.status, event.deliveries, event.attempts) == (InboxStatus.DONE, 2, 1), event.last_error
        assignment = session.scalars(select(Assignment)).one()
        customer = session.get(Customer, ext)
        relation = session.scalars(select(FollowRelation)).one()
    assert (assignment.advisor_userid, assignment.status, assignment.reason) == (
        "sh_a",
        "transferring",
        "shared_code",
    )
    explanation = assignment.explanation
    assert explanation["chosen"]["advisor"] == "sh_a"
    assert explanation["chosen"]["breakdown"]["model"] > 0
    assert explanation["excluded"] == {"sh_c": "inactive"}
    assert customer.profile["model"] == "RAV4" and customer.profile["channel"] == "qr"
    assert (relation.advisor_userid, relation.status) == ("sh_rc", "active")

    [welcome] = _welcomes(corp, ext)  # delivered twice, welcomed once
    assert "王芳" in welcome.text and "RAV4" in welcome.text
    assert {"渠道:门店活码", "意向车型:RAV4"} <= _relation_tags(corp, "sh_rc", ext)
    transfer = corp.state.transfers[ext]
    assert (transfer.handover_userid, transfer.takeover_userid) == ("sh_rc", "sh_a")
    assert _kinds(svc, ext) == ["added", "assigned", "welcomed", "tagged", "transferred"]


def test_a_job_killed_after_its_wecom_calls_does_not_repeat_them(corp: SandboxServer, svc, work) -> None:
    ext = corp.platform.customer_adds(config_id=_way(corp, "sh_rc", "qr.SH01.RAV4")).data["external_userid"]
    work()
    first = _kinds(svc, ext)

    # A worker that died after the WeCom calls but before its commit: none of its rows exist.
    # Once with the effects ledger written, once without (died before even that).
    for forget_ledger in (False, True):
        with svc.sessions.begin() as session:
            event = session.scalars(select(InboxEvent)).one()
            session.execute(delete(Interaction))
            session.execute(delete(Assignment))
            session.execute(delete(FollowRelation))
            session.execute(delete(Customer))
            if forget_ledger:
                session.execute(delete(Effect).where(~Effect.key.like("assign:%")))
            session.execute(update(InboxEvent).values(status=InboxStatus.RECEIVED))
        enqueue_event(svc.redis, svc.settings, event.id, event.job_generation + 1 + forget_ledger)
        work()
        assert _kinds(svc, ext) == first
        assert len(_welcomes(corp, ext)) == 1
        assert corp.state.stats()["api_calls"].get("externalcontact/transfer_customer") == 1 + forget_ledger
        assert corp.state.transfers[ext].takeover_userid == "sh_a"


def test_the_advisors_own_code_keeps_the_customer(corp: SandboxServer, svc, work) -> None:
    ext = corp.platform.customer_adds(config_id=_way(corp, "sh_b", "ad.SH01.COROLLA")).data["external_userid"]
    work()
    with svc.sessions() as session:
        assignment = session.scalars(select(Assignment)).one()
    assert (assignment.advisor_userid, assignment.status, assignment.reason) == ("sh_b", "kept", "own_code")
    assert ext not in corp.state.transfers
    [welcome] = _welcomes(corp, ext)
    assert "李强" in welcome.text and "COROLLA" in welcome.text
    assert {"渠道:顾问名片", "意向车型:COROLLA"} <= _relation_tags(corp, "sh_b", ext)


def test_a_completed_transfer_moves_the_relation(corp: SandboxServer, svc, work) -> None:
    ext = corp.platform.customer_adds(config_id=_way(corp, "sh_rc", "qr.SH01.RAV4")).data["external_userid"]
    work()
    corp.platform.complete_transfers()
    work()
    with svc.sessions() as session:
        relations = {r.advisor_userid: r.status for r in session.scalars(select(FollowRelation))}
        assignment = session.scalars(select(Assignment)).one()
    assert relations == {"sh_rc": "transferred", "sh_a": "active"}
    assert assignment.status == "transferred"
    assert _kinds(svc, ext)[-1] == "transfer_completed"


def test_a_refused_transfer_is_offered_to_the_next_best_advisor(corp: SandboxServer, svc, work) -> None:
    ext = corp.platform.customer_adds(config_id=_way(corp, "sh_rc", "qr.SH01.RAV4")).data["external_userid"]
    work()
    corp.platform.complete_transfers(fail_reason="customer_refused")
    work()
    with svc.sessions() as session:
        rows = list(session.scalars(select(Assignment).order_by(Assignment.id)))
    assert [(a.advisor_userid, a.status, a.reason) for a in rows] == [
        ("sh_a", "failed", "shared_code"),
        ("sh_b", "transferring", "transfer_retry"),
    ]
    assert rows[1].explanation["excluded"]["sh_a"] == "a transfer to this advisor failed"
    assert (corp.state.transfers[ext].handover_userid, corp.state.transfers[ext].takeover_userid) == (
        "sh_rc",
        "sh_b",
    )
    assert _kinds(svc, ext)[-3:] == ["transfer_failed", "assigned", "transferred"]


def test_a_customer_who_deletes_the_advisor_alerts_the_dealer_manager(corp: SandboxServer, svc, work) -> None:
    ext = corp.platform.customer_adds(config_id=_way(corp, "sh_b", "ad.SH01.COROLLA")).data["external_userid"]
    work()
    corp.platform.customer_deletes_advisor("sh_b", ext, duplicate=True)
    work()
    with svc.sessions() as session:
        relation = session.scalars(select(FollowRelation)).one()
    assert (relation.status, relation.end_reason) == ("lost", "customer_deleted_advisor")
    [card] = [m for m in corp.state.app_messages if m.touser == ["sh_mgr"]]
    assert card.msgtype == "textcard" and "李强" in card.content["title"]
    assert _kinds(svc, ext)[-2:] == ["churned", "churn_alerted"]


def test_an_expired_welcome_code_is_recorded_not_retried(corp: SandboxServer, svc, work) -> None:
    ext = corp.platform.customer_adds(config_id=_way(corp, "sh_b", "ad.SH01.COROLLA")).data["external_userid"]
    corp.state.clock.advance(25)  # the worker comes too late: the code lived 20 s
    work()
    assert _welcomes(corp, ext) == []
    with svc.sessions() as session:
        event = session.scalars(select(InboxEvent)).one()
        missed = session.scalars(select(Interaction).where(Interaction.kind == "welcome_missed")).one()
    assert event.status == InboxStatus.DONE and event.attempts == 1
    assert missed.payload["status"] == "expired"


def test_a_lead_reaches_its_advisor_and_is_linked_when_the_customer_adds_them(
    corp: SandboxServer, svc, work
) -> None:
    from app.intake import leads
    from app.store.models import Lead

    fields = {"source": "cdp", "external_ref": "L1", "name": "韩梅梅", "phone": "138-0000-0001"}
    report = leads.import_leads(svc, [(1, {**fields, "model": "RAV4", "dealer": "SH01", "intent": 85})])
    [result] = report.results
    assert (result.status, result.advisor) == ("created", "sh_a")
    work()  # the advisor's card
    [card] = [m for m in corp.state.app_messages if m.touser == ["sh_a"]]
    assert "新线索" in card.content["title"] and "138****0001" in card.content["description"]
    assert "13800000001" not in str(card.content)

    with svc.sessions() as session:
        state = leads.lead_state(session.get(Lead, result.lead_id))
    ext = corp.platform.customer_adds(userid="sh_a", state=state).data["external_userid"]
    work()
    with svc.sessions() as session:
        lead = session.get(Lead, result.lead_id)
        customer = session.get(Customer, ext)
        assignment = session.scalars(select(Assignment).where(Assignment.external_userid == ext)).one()
        stored = session.scalars(select(Interaction.payload)).all()
    assert (lead.status, lead.external_userid) == ("linked", ext)
    # The lead's own assignment counted towards sh_a's load; the add that fulfils it does not again.
    assert (assignment.advisor_userid, assignment.reason, assignment.status) == ("sh_a", "lead", "linked")
    with svc.sessions() as session:
        assert assign.loads(session, ["sh_a"], svc.clock.now())["sh_a"].assigned_today == 1
    assert customer.profile["intent"] == 85 and customer.profile["lead_id"] == lead.id
    assert "lead_linked" in _kinds(svc, ext)
    assert "13800000001" not in str(stored)


def test_a_job_that_cannot_have_the_decision_lock_fails_before_any_wecom_call_and_is_retried(
    corp: SandboxServer, svc, work, monkeypatch
) -> None:
    monkeypatch.setattr(assign, "LOCK_WAIT_SECONDS", 0.05)
    svc.redis.set(assign.LOCK_NAME, "a stuck holder", px=60_000)
    ext = corp.platform.customer_adds(config_id=_way(corp, "sh_rc", "qr.SH01.RAV4")).data["external_userid"]
    work()

    with svc.sessions() as session:
        event = session.scalars(select(InboxEvent)).one()
        decided = session.scalars(select(Effect.key).where(Effect.key.like("assign:%"))).all()
    assert event.attempts == 3 and "AssignmentBusy" in (event.last_error or "")  # RQ retried it
    assert decided == [] and _welcomes(corp, ext) == []  # nothing decided, nothing sent

"""SOP end to end against the sandbox: the starter cards loaded, a customer adds an advisor through
WeCom (callback → inbox → worker), the trigger consumer enrolls them in 新潜客欢迎, the due step
reminds the advisor with a card and tags the customer, the next day the next step goes out through
a worker, and the customer deleting the advisor ends the enrollment."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from app.intake import tagging
from app.sandbox import SandboxConfig, SandboxServer, run_sandbox
from app.sop.versions import load_cards
from app.store.models import Customer, InboxEvent, InboxStatus
from app.store.sop_models import SopEnrollment
from tests.support import roster
from workers import sop_jobs

CARDS = Path(__file__).resolve().parents[2] / "sop_cards"
STARTER_TAGS = {
    "意向车型": ["RAV4", "COROLLA", "AVALON", "BZ4X"],
    "客户阶段": ["潜客", "意向", "战败", "车主"],
    "活动": ["试驾专场", "战败召回", "老带新"],
}


@pytest.fixture()
def wecom() -> Iterator[SandboxServer]:
    with run_sandbox(SandboxConfig(seed=23, retry_delay=0.05)) as server:
        yield server


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom: SandboxServer) -> dict[str, Any]:
    return {**app_config, "WECOM_API_BASE": wecom.api_base, "PUBLIC_BASE_URL": "https://scrm.example.com"}


@pytest.fixture()
def corp(app, svc, wecom: SandboxServer) -> Iterator[SandboxServer]:
    """Our app on a socket as the sandbox's callback target; a dealer with two advisors; the
    starter cards' tags in WeCom and in our copy; the starter cards loaded."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    wecom.state.configure(callback_url=f"http://127.0.0.1:{server.port}/wecom/callback")
    now = svc.clock.now()
    roster.store(
        svc,
        [
            roster.dealer(
                "SH01", now, name="一汽丰田上海浦东店", lat=31.22, lon=121.54,
                models=["RAV4", "COROLLA", "AVALON", "BZ4X"], manager="sh_mgr",
            )
        ],
        [
            roster.advisor(userid, now, name=name, languages=["普通话"], segments=["prospect"])
            for userid, name in (("sh_a", "王芳"), ("sh_b", "李强"))
        ],
    )
    for userid, name in (("sh_a", "王芳"), ("sh_b", "李强"), ("sh_mgr", "刘经理")):
        wecom.state.add_employee(userid, name)
    for group, names in STARTER_TAGS.items():
        wecom.state.add_tags(None, group, [{"name": name} for name in names])
    tagging.sync_corp_tags(svc)
    report = load_cards(svc, [CARDS])
    assert report.ok, [str(p) for p in report.problems]
    yield wecom
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _reminders(corp: SandboxServer, userid: str) -> list[Any]:
    return [
        m
        for m in corp.state.app_messages
        if m.touser == [userid] and m.content["title"].startswith("SOP提醒")
    ]


def _tags(corp: SandboxServer, userid: str, ext: str) -> set[str]:
    relation = corp.state.relations[(userid, ext)]
    return {
        f"{corp.state.tag_groups[corp.state.tags[t].group_id].group_name}:{corp.state.tags[t].name}"
        for t in relation.tag_ids
    }


def test_a_new_customer_goes_through_prospect_welcome(
    corp: SandboxServer, svc, work, scrm, clock, client
) -> None:
    way = corp.state.add_contact_way({"type": 1, "scene": 2, "state": "ad.SH01.RAV4", "user": ["sh_a"]})
    ext = corp.platform.customer_adds(config_id=way.config_id).data["external_userid"]
    work()  # the event; then the sweep job the worker's maintenance queued; then the day-0 step
    with svc.sessions() as session:
        event = session.scalars(select(InboxEvent)).one()
        assert event.status == InboxStatus.DONE, event.last_error
        name = session.get(Customer, ext).name

    # Nothing is left for a sweep by hand.
    result = scrm("sop", "run-due")
    assert result.exit_code == 0, result.output
    assert "0 enrolled" in result.output and "0 due step(s)" in result.output
    with svc.sessions() as session:
        [enrollment] = session.scalars(select(SopEnrollment)).all()
    assert (enrollment.card_id, enrollment.advisor_userid, enrollment.trigger_kind) == (
        "prospect-welcome",
        "sh_a",
        "contact_added",
    )
    [card] = _reminders(corp, "sh_a")
    assert card.content["title"] == f"SOP提醒：{name} · 新潜客欢迎"
    assert "意向车型 RAV4" in card.content["description"]
    assert card.content["url"] == (
        f"https://scrm.example.com/sidebar?external_userid={ext}&card=prospect-welcome&step=0"
    )
    assert "客户阶段:潜客" in _tags(corp, "sh_a", ext)  # the step's tag action

    # The next day at 10:00 the second step is due; a worker runs it.
    clock.advance(timedelta(hours=23, minutes=59))
    assert sop_jobs.sweep(svc).enqueued == 0
    clock.advance(timedelta(minutes=1))
    assert sop_jobs.sweep(svc).enqueued == 1
    work()
    reminders = _reminders(corp, "sh_a")
    assert len(reminders) == 2 and reminders[1].content["url"].endswith("step=1")
    assert "回访" in reminders[1].content["description"]

    # The customer deletes the advisor: the enrollment ends.
    corp.platform.customer_deletes_advisor("sh_a", ext)
    work()
    report = sop_jobs.sweep(svc)
    assert report.consumed.exited == 1
    with svc.sessions() as session:
        ended = session.get(SopEnrollment, enrollment.id)
    assert (ended.status, ended.exit_reason, ended.next_step) == ("exited", "customer_left", 2)

    answer = client.get(
        "/api/sop/stats?card=prospect-welcome", headers={"Authorization": "Bearer sandbox-hq-token"}
    )
    [stats] = answer.get_json()["cards"]
    assert (stats["enrolled"], stats["exited"], stats["reminded"]) == (1, 1, 2)
    assert [s["reminded"] for s in stats["steps"]] == [1, 1, 0, 0]
    assert [s["dropped"] for s in stats["steps"]] == [0, 0, 1, 0]

"""One test per change_external_contact fixture (tests/fixtures/events/): POSTed encrypted through
the real endpoint, handled by a real worker, WeCom's API mocked with ``responses``.
The full story (shared codes, transfers, churn alerts) runs against the sandbox in
tests/integration/test_intake_flow.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import responses
from sqlalchemy import select

from app.config import DEFAULT_WECOM_API_BASE
from app.intake import assign
from app.store.models import (
    Assignment,
    CorpTag,
    Customer,
    FollowRelation,
    InboxEvent,
    InboxStatus,
    Interaction,
)
from tests.conftest import FIXTURES
from tests.support import roster

EVENTS = FIXTURES / "events"
EXT = "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA"


@pytest.fixture()
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(
            DEFAULT_WECOM_API_BASE + "gettoken",
            json={"errcode": 0, "errmsg": "ok", "access_token": "T" * 32, "expires_in": 7200},
        )
        mock.post(
            DEFAULT_WECOM_API_BASE + "externalcontact/send_welcome_msg", json={"errcode": 0, "errmsg": "ok"}
        )
        mock.get(
            DEFAULT_WECOM_API_BASE + "externalcontact/get",
            json={
                "errcode": 0,
                "errmsg": "ok",
                "external_contact": {"external_userid": EXT, "name": "李雷", "type": 1, "unionid": "u-lilei"},
                "follow_user": [
                    {
                        "userid": "zhangsan",
                        "createtime": 1403610513,
                        "tags": [
                            {"group_name": "意向车型", "tag_name": "RAV4", "tag_id": "et-rav4", "type": 1}
                        ],
                    }
                ],
            },
        )
        yield mock


def _calls(http: responses.RequestsMock) -> list[str]:
    return [
        urlsplit(c.request.url).path.removeprefix("/cgi-bin/")
        for c in http.calls
        if "gettoken" not in c.request.url
    ]


def _handle(name: str, poster, work, svc) -> tuple[InboxEvent, list[Interaction]]:
    return _handle_text((EVENTS / f"{name}.xml").read_text(), poster, work, svc)


def _handle_text(plaintext: str, poster, work, svc) -> tuple[InboxEvent, list[Interaction]]:
    response = poster.post(plaintext)
    assert (response.status_code, response.data) == (200, b"success")
    work()
    with svc.sessions() as session:
        row = session.scalars(select(InboxEvent)).one()
        written = list(session.scalars(select(Interaction).order_by(Interaction.id)))
    assert row.status == InboxStatus.DONE, row.last_error
    assert all(i.source_event_id == row.id for i in written)
    return row, written


def test_add_external_contact(http, poster, work, svc) -> None:
    _, written = _handle("change_external_contact__add_external_contact", poster, work, svc)
    assert _calls(http) == ["externalcontact/send_welcome_msg", "externalcontact/get"]
    welcome = json.loads(http.calls[1].request.body)
    assert welcome["welcome_code"] == "WELCOMECODE" and welcome["text"]["content"]
    assert [i.kind for i in written] == ["added", "assigned", "welcomed"]
    assert written[1].payload["reason"] == "own_code"  # "teststate" is not one of our codes: kept
    with svc.sessions() as session:
        customer = session.get(Customer, EXT)
        relation = session.scalars(select(FollowRelation)).one()
    assert (customer.name, customer.unionid, customer.profile["model"]) == ("李雷", "u-lilei", "RAV4")
    assert (relation.advisor_userid, relation.state, relation.tag_ids) == (
        "zhangsan",
        "teststate",
        ["et-rav4"],
    )


def test_add_half_external_contact(http, poster, work, svc) -> None:
    _, written = _handle("change_external_contact__add_half_external_contact", poster, work, svc)
    assert _calls(http) == ["externalcontact/send_welcome_msg", "externalcontact/get"]
    assert [i.kind for i in written] == ["added_unconfirmed", "assigned", "welcomed"]


def test_edit_external_contact(http, poster, work, svc) -> None:
    _, written = _handle("change_external_contact__edit_external_contact", poster, work, svc)
    assert _calls(http) == ["externalcontact/get"]
    assert [i.kind for i in written] == ["edited"]
    assert written[0].payload == {"tags": ["意向车型:RAV4"]}
    with svc.sessions() as session:
        assert session.get(Customer, EXT).profile == {"model": "RAV4"}


def test_del_external_contact(http, poster, work, svc) -> None:
    _, written = _handle("change_external_contact__del_external_contact", poster, work, svc)
    assert _calls(http) == []
    # The fixture's Source is DELETE_BY_TRANSFER: a hand-over made outside Dealer SCRM completed.
    assert [(i.kind, i.advisor_userid, i.payload) for i in written] == [
        ("transfer_completed", "zhangsan", {"from": "zhangsan", "to": None})
    ]


def test_del_follow_user(http, poster, work, svc) -> None:
    # No roster here, so no dealer manager to alert: the churn is recorded all the same.
    _, written = _handle("change_external_contact__del_follow_user", poster, work, svc)
    assert _calls(http) == []
    assert [(i.kind, i.payload["by"]) for i in written] == [("churned", "customer")]


def test_transfer_fail(http, poster, work, svc) -> None:
    # Nobody is known to hold the customer, so there is no one to hand them from again.
    _, written = _handle("change_external_contact__transfer_fail", poster, work, svc)
    assert _calls(http) == []
    assert [(i.kind, i.payload) for i in written] == [
        ("transfer_failed", {"reason": "customer_refused", "kept_by": None})
    ]


def test_del_external_contact_by_the_advisor(http, poster, work, svc) -> None:
    plaintext = (EVENTS / "change_external_contact__del_external_contact.xml").read_text()
    poster.post(plaintext.replace("DELETE_BY_TRANSFER", "DELETE_BY_USER"))
    work()
    with svc.sessions() as session:
        [written] = session.scalars(select(Interaction)).all()
    assert (written.kind, written.payload) == ("deleted", {"by": "advisor", "source": "DELETE_BY_USER"})


def test_a_half_add_and_its_confirmation_count_the_customer_once(http, poster, work, svc) -> None:
    # An advisor with no verification gets add_half_external_contact when the customer adds them,
    # then add_external_contact when they confirm (without a WelcomeCode: the first one was used).
    # One customer, one place in the advisor's load, not two.
    half = (EVENTS / "change_external_contact__add_half_external_contact.xml").read_text()
    full = (EVENTS / "change_external_contact__add_external_contact.xml").read_text()
    full = full.replace("<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>\n", "")
    poster.post(half)
    work()
    poster.post(full.replace("1403610513", "1403610600"))
    work()
    with svc.sessions() as session:
        rows = session.scalars(select(InboxEvent)).all()
        assert [r.status for r in rows] == [InboxStatus.DONE, InboxStatus.DONE]
        load = assign.loads(session, ["zhangsan"], svc.clock.now())["zhangsan"]
    assert load.assigned_today == 1
    assert _calls(http).count("externalcontact/send_welcome_msg") == 1


def test_a_transfer_already_under_way_in_wecom_counts_as_started(http, poster, work, svc) -> None:
    # A worker died after transfer_customer and before the ledger write: the job's next run asks
    # again and WeCom answers, per customer, 40129 当前客户正在转接中. The hand-over is under way.
    now = svc.clock.now()
    roster.store(
        svc,
        [roster.dealer("SH01", now, models=["RAV4"])],
        [roster.advisor("zhangsan", now, models=[]), roster.advisor("sh_a", now, models=["RAV4"])],
    )
    with svc.sessions.begin() as session:
        for tag_id, group, name in (("et-qr", "渠道", "门店活码"), ("et-rav4", "意向车型", "RAV4")):
            session.add(CorpTag(tag_id=tag_id, group_id=group, group_name=group, name=name, synced_at=now))
    http.post(DEFAULT_WECOM_API_BASE + "externalcontact/mark_tag", json={"errcode": 0, "errmsg": "ok"})
    http.post(
        DEFAULT_WECOM_API_BASE + "externalcontact/transfer_customer",
        json={"errcode": 0, "errmsg": "ok", "customer": [{"external_userid": EXT, "errcode": 40129}]},
    )
    plaintext = (EVENTS / "change_external_contact__add_external_contact.xml").read_text()
    _, written = _handle_text(plaintext.replace("teststate", "qr.SH01.RAV4"), poster, work, svc)
    with svc.sessions() as session:
        assignment = session.scalars(select(Assignment)).one()
    assert (assignment.advisor_userid, assignment.status) == ("sh_a", "transferring")
    assert [i.kind for i in written][-1] == "transferred"

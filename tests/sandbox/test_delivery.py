"""Callback delivery: WeCom's retry rule, lost answers, the bot URL, the pool and its counters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.clock import FrozenClock
from app.sandbox import Sandbox, events
from app.wecom.events import ExternalContactChange, parse_event
from tests.sandbox.conftest import AGENT_ID, CORP_ID
from tests.sandbox.receiver import Receiver


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture()
def wired(sandbox: Sandbox, receiver: Receiver, corp: dict[str, Any]) -> Sandbox:
    sandbox.state.configure(
        callback_url=receiver.url + "/wecom/callback",
        bot_callback_url=receiver.url + "/wecom/bot",
        retry_delay=2.0,
    )
    return sandbox


def test_add_event_is_encrypted_signed_and_shaped_like_wecom(
    wired: Sandbox, receiver: Receiver, corp: dict[str, Any], clock: FrozenClock
) -> None:
    emission = wired.platform.customer_adds(config_id=corp["config_id"])
    report = emission.report()
    assert report.acknowledged and len(report.attempts) == 1
    [got] = receiver.received
    assert got.path == "/wecom/callback"
    assert got.timestamp == str(int(clock.time()))
    assert got.agent_id == ""
    event = parse_event(got.plaintext)
    assert (event.to_user_name, event.from_user_name, event.msg_type) == (CORP_ID, "sys", "event")
    change = ExternalContactChange.of(event)
    assert change.change_type == "add_external_contact"
    assert (change.user_id, change.state) == ("zhangsan", "dealer_a")
    assert change.external_user_id == emission.data["external_userid"]
    assert change.welcome_code == emission.data["welcome_code"]


def test_failed_answers_are_retried_with_the_same_plaintext(
    wired: Sandbox, receiver: Receiver, corp: dict[str, Any], clock: FrozenClock
) -> None:
    receiver.script = [(500, "boom", 0.0), (500, "boom", 0.0), (200, "success", 0.0)]
    report = wired.platform.customer_adds(config_id=corp["config_id"]).report()
    assert [a.status for a in report.attempts] == [500, 500, 200]
    assert report.acknowledged
    assert len(receiver.received) == 3
    assert len({r.plaintext for r in receiver.received}) == 1
    # Each re-delivery is encrypted afresh: new nonce, new ciphertext.
    assert len({r.nonce for r in receiver.received}) == 3
    assert len({r.encrypt for r in receiver.received}) == 3
    assert clock.slept == [2.0, 2.0]
    counters = wired.state.delivery_log.snapshot()
    assert counters["deliveries_attempted"] == 3
    assert counters["deliveries_acknowledged"] == 1
    assert counters["given_up"] == 0


def test_gives_up_after_three_retries(wired: Sandbox, receiver: Receiver, corp: dict[str, Any]) -> None:
    receiver.script = [(503, "", 0.0)] * 10
    report = wired.platform.customer_adds(config_id=corp["config_id"]).report()
    assert report.outcome == "gave_up"
    assert len(report.attempts) == 4 == len(receiver.received)
    assert wired.state.delivery_log.snapshot()["given_up"] == 1


def test_a_slow_answer_counts_as_failed(wired: Sandbox, receiver: Receiver, corp: dict[str, Any]) -> None:
    wired.state.configure(callback_timeout=0.2)
    receiver.script = [(200, "success", 0.5)]
    report = wired.platform.customer_adds(config_id=corp["config_id"]).report()
    assert report.attempts[0].error == "timeout"
    assert report.attempts[1].acknowledged
    assert len(report.attempts) == 2


def test_lost_answer_delivers_twice(wired: Sandbox, receiver: Receiver, corp: dict[str, Any]) -> None:
    report = wired.platform.customer_adds(config_id=corp["config_id"], duplicate=True).report()
    assert [a.status for a in report.attempts] == [200, 200]
    assert receiver.received[0].plaintext == receiver.received[1].plaintext
    assert wired.state.delivery_log.snapshot()["duplicates_sent"] == 1


def test_advisor_text_goes_to_the_bot_url(wired: Sandbox, receiver: Receiver) -> None:
    first = wired.platform.advisor_texts_bot("zhangsan", "试驾 <SUV> ]]> 报价")
    second = wired.platform.advisor_texts_bot("zhangsan", "again")
    assert first.report().acknowledged
    got = receiver.received[0]
    assert got.path == "/wecom/bot"
    assert got.agent_id == str(AGENT_ID)
    event = parse_event(got.plaintext)
    assert (event.msg_type, event.from_user_name, event.agent_id) == ("text", "zhangsan", str(AGENT_ID))
    assert event.fields["Content"] == "试驾 <SUV> ]]> 报价"
    assert 0 < int(event.msg_id) < 2**63
    assert first.data["msg_id"] != second.data["msg_id"]


def test_passive_reply_can_be_opened(wired: Sandbox, receiver: Receiver) -> None:
    reply = "<xml><ToUserName>zhangsan</ToUserName><MsgType>text</MsgType><Content>好的</Content></xml>"
    sealed = receiver.crypto.seal(reply, nonce="123", timestamp="1700000000")
    receiver.script = [(200, sealed, 0.0)]
    report = wired.platform.advisor_texts_bot("zhangsan", "hi").report()
    assert wired.deliverer.open_reply(report) == reply
    plain = wired.platform.advisor_texts_bot("zhangsan", "hi").report()
    assert wired.deliverer.open_reply(plain) is None


def test_other_contact_events(wired: Sandbox, receiver: Receiver, corp: dict[str, Any]) -> None:
    ext = wired.platform.customer_adds(config_id=corp["config_id"]).data["external_userid"]
    wired.platform.advisor_edits_customer("zhangsan", ext, remark="王总", add_tags=[corp["tags"]["SUV"]])
    wired.platform.customer_deletes_advisor("zhangsan", ext)
    wired.platform.advisor_deletes_customer("zhangsan", ext)
    changes = [ExternalContactChange.of(parse_event(r.plaintext)) for r in receiver.received]
    assert [c.change_type for c in changes] == [
        "add_external_contact",
        "edit_external_contact",
        "del_follow_user",
        "del_external_contact",
    ]
    assert all((c.user_id, c.external_user_id) == ("zhangsan", ext) for c in changes)
    assert changes[3].source is None and changes[1].welcome_code is None


def test_pool_delivers_many_and_counts(wired: Sandbox, receiver: Receiver, corp: dict[str, Any]) -> None:
    emissions = [wired.platform.customer_adds(config_id=corp["config_id"], wait=False) for _ in range(40)]
    assert wired.platform.drain(timeout=30)
    assert all(e.report(timeout=1).acknowledged for e in emissions)
    assert len({r.plaintext for r in receiver.received}) == 40
    counters = wired.state.delivery_log.snapshot()
    assert counters["events_emitted"] == 40
    assert counters["deliveries_acknowledged"] == 40


def test_no_callback_url_keeps_the_event_undelivered(sandbox: Sandbox, corp: dict[str, Any]) -> None:
    report = sandbox.platform.customer_adds(config_id=corp["config_id"]).report()
    assert report.outcome == "no_callback_url" and report.attempts == []


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"


@pytest.mark.parametrize(
    ("fixture", "change_type", "extra"),
    [
        ("add_external_contact", "add_external_contact", {"State": "teststate", "WelcomeCode": "WELCOMECODE"}),
        ("edit_external_contact", "edit_external_contact", {}),
        ("del_external_contact", "del_external_contact", {"Source": "DELETE_BY_TRANSFER"}),
        ("del_follow_user", "del_follow_user", {}),
        ("transfer_fail", "transfer_fail", {"FailReason": "customer_refused"}),
    ],
)
def test_contact_event_plaintext_is_byte_for_byte_wecoms_sample(
    fixture: str, change_type: str, extra: dict[str, str]
) -> None:
    expected = (FIXTURES / f"change_external_contact__{fixture}.xml").read_text().strip()
    fields = parse_event(expected)
    rendered = events.external_contact_event(
        "toUser", change_type, 1403610513, "zhangsan", str(fields.fields["ExternalUserID"]), **extra
    )
    assert rendered == expected


def test_app_text_plaintext_is_byte_for_byte_wecoms_sample() -> None:
    expected = (FIXTURES / "msg__text.xml").read_text().strip()
    rendered = events.app_text_message(
        "wx5823bf96d3bd56c7", "mycreate", 1409659813, "hello", 4561255354251345929, 218
    )
    assert rendered == expected

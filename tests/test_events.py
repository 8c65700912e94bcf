"""Plaintext XML → typed events, and the dedup key's two promises."""

from __future__ import annotations

import random
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.wecom.errors import MalformedXml
from app.wecom.events import AppTextMessage, ExternalContactChange, parse_event, parse_xml
from tests.conftest import FIXTURES

EVENTS = FIXTURES / "events"


def test_group_chat_update_keeps_lists_and_numbers() -> None:
    event = parse_event((EVENTS / "change_external_chat__update.xml").read_text())
    assert event.event_type == "change_external_chat:update"
    assert event.fields["MemChangeList"] == ["Jack", "Rose"]
    assert event.fields["MemChangeCnt"] == "10"


def test_field_order_and_missing_optional_fields_do_not_matter() -> None:
    event = parse_event((EVENTS / "change_external_tag__create__realworld_no_strategy.xml").read_text())
    assert event.event_type == "change_external_tag:create"
    assert "StrategyId" not in event.fields
    assert event.fields["Id"] == "etjmgTCQAAYIEtCEn30FEiMU9jH_HaaA"


def test_typed_views() -> None:
    change = ExternalContactChange.of(
        parse_event((EVENTS / "change_external_contact__transfer_fail.xml").read_text())
    )
    assert (change.user_id, change.fail_reason, change.state) == ("zhangsan", "customer_refused", None)
    message = AppTextMessage.of(parse_event((EVENTS / "msg__text.xml").read_text()))
    assert (message.user_id, message.content, message.msg_id) == ("mycreate", "hello", "4561255354251345929")
    assert parse_event((EVENTS / "msg__text.xml").read_text()).event_type == "msg:text"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<xml>",
        "<xml><a>1</a></xml><xml/>",
        '<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>',
        '<!DOCTYPE xml [<!ENTITY a "1"><!ENTITY b "&a;&a;">]><xml><a>&b;</a></xml>',
        "<xml>text only</xml>",
    ],
)
def test_bad_xml_is_refused(text: str) -> None:
    with pytest.raises(MalformedXml):
        parse_xml(text)


def test_events_need_a_type_and_a_numeric_time() -> None:
    with pytest.raises(MalformedXml):
        parse_event("<xml><MsgType>event</MsgType><CreateTime>1</CreateTime></xml>")
    with pytest.raises(MalformedXml):
        parse_event("<xml><MsgType>event</MsgType><Event>x</Event><CreateTime>soon</CreateTime></xml>")


ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=32
)


def _contact_event(fields: dict[str, str], order_seed: int, cdata: bool) -> str:
    items = list(fields.items())
    random.Random(order_seed).shuffle(items)
    wrap = (lambda v: f"<![CDATA[{v}]]>") if cdata else escape
    return "<xml>" + "".join(f"<{k}>{wrap(v)}</{k}>" for k, v in items) + "</xml>"


def _fields(user: str, customer: str, created: int, state: str) -> dict[str, str]:
    return {
        "ToUserName": "wx5823bf96d3bd56c7",
        "FromUserName": "sys",
        "CreateTime": str(created),
        "MsgType": "event",
        "Event": "change_external_contact",
        "ChangeType": "add_external_contact",
        "UserID": user,
        "ExternalUserID": customer,
        "State": state,
    }


@settings(max_examples=200, deadline=None)
@given(
    user=ids, customer=ids, created=st.integers(1, 2**31), state=ids, seed=st.integers(), cdata=st.booleans()
)
def test_a_redelivery_has_the_same_key_whatever_its_layout(
    user, customer, created, state, seed, cdata
) -> None:
    fields = _fields(user, customer, created, state)
    first = parse_event(_contact_event(fields, 0, True))
    again = parse_event(_contact_event(fields, seed, cdata))
    assert first.dedup_key == again.dedup_key
    assert len(first.dedup_key) <= 191


@settings(max_examples=200, deadline=None)
@given(user=ids, customers=st.lists(ids, min_size=2, max_size=2, unique=True), created=st.integers(1, 2**31))
def test_two_customers_in_the_same_second_have_different_keys(user, customers, created) -> None:
    a, b = (parse_event(_contact_event(_fields(user, c, created, "s"), 0, True)) for c in customers)
    assert a.dedup_key != b.dedup_key

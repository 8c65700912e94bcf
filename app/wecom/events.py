"""Plaintext callback XML → a typed event with its dispatch type and dedup key.

wechatpy 1.8.18's ``parse_message`` turns every customer-contact event into ``UnknownMessage``
and parses with xmltodict, so events are read here, with defusedxml only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from pydantic import BaseModel, ConfigDict, Field

from app.wecom.errors import MalformedXml

XmlValue = str | list[Any] | dict[str, Any]


def parse_xml(text: str | bytes) -> dict[str, XmlValue]:
    """Parse WeCom XML into a dict of its root's children. Rejects DTDs, entities and external
    references (billion laughs, XXE) and anything that is not well-formed."""
    try:
        root = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise MalformedXml(f"forbidden XML construct: {type(exc).__name__}") from None
    except (ParseError, ValueError, UnicodeError) as exc:
        raise MalformedXml(f"not well-formed XML: {type(exc).__name__}") from None
    try:
        value = _element_value(root)
    except RecursionError:  # well-formed but nested thousands deep: no WeCom XML looks like that
        raise MalformedXml("XML nested too deeply") from None
    if not isinstance(value, dict):
        raise MalformedXml("the root element has no fields")
    return value


def _element_value(element: Element) -> XmlValue:
    children = list(element)
    if not children:
        return element.text or ""
    tags = [child.tag for child in children]
    if len(children) > 1 and len(set(tags)) == 1:  # <MemChangeList><Item>a</Item><Item>b</Item>
        return [_element_value(child) for child in children]
    result: dict[str, Any] = {}
    for child in children:
        value = _element_value(child)
        if child.tag in result:  # a repeated field: keep every value, in order
            previous = result[child.tag]
            result[child.tag] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            result[child.tag] = value
    return result


class CallbackEvent(BaseModel):
    """The header every callback carries, plus all its fields as parsed."""

    model_config = ConfigDict(frozen=True)

    to_user_name: str
    from_user_name: str
    create_time: int
    msg_type: str
    event: str = ""
    change_type: str = ""
    msg_id: str = ""
    agent_id: str = ""
    fields: dict[str, Any]

    @property
    def event_type(self) -> str:
        """The dispatch key: ``change_external_contact:add_external_contact``, ``msg:text``…"""
        if self.msg_type == "event":
            return f"{self.event}:{self.change_type}" if self.change_type else self.event
        return f"msg:{self.msg_type}"

    @property
    def dedup_key(self) -> str:
        """Same for WeCom's retries of one callback, different for two events in one second.

        Messages carry a MsgId. Customer events all come from ``sys`` and have no id, so the key
        hashes every field: two customers adding one advisor in the same second differ in
        ExternalUserID, while a retry repeats the event field for field.
        """
        if self.msg_id:
            return f"msg:{self.to_user_name[:40]}:{self.agent_id[:12]}:{self.msg_id[:40]}"
        canonical = json.dumps(self.fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:40]
        return f"evt:{self.event[:40]}:{self.change_type[:40]}:{self.create_time}:{digest}"


def parse_event(plaintext: str) -> CallbackEvent:
    fields = parse_xml(plaintext)
    msg_type = _text(fields, "MsgType")
    if not msg_type:
        raise MalformedXml("no MsgType")
    try:
        create_time = int(_text(fields, "CreateTime") or "0")
    except ValueError:
        raise MalformedXml("CreateTime is not a number") from None
    if msg_type == "event" and not _text(fields, "Event"):
        raise MalformedXml("an event without Event")
    return CallbackEvent(
        to_user_name=_text(fields, "ToUserName"),
        from_user_name=_text(fields, "FromUserName"),
        create_time=create_time,
        msg_type=msg_type,
        event=_text(fields, "Event"),
        change_type=_text(fields, "ChangeType"),
        msg_id=_text(fields, "MsgId"),
        agent_id=_text(fields, "AgentID"),
        fields=fields,
    )


def _text(fields: dict[str, XmlValue], name: str) -> str:
    value = fields.get(name, "")
    return value.strip() if isinstance(value, str) else ""


class ExternalContactChange(BaseModel):
    """Event=change_external_contact (add, add_half, edit, del_external_contact, del_follow_user,
    transfer_fail). Optional fields are absent on the types that do not carry them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    change_type: str = Field(alias="ChangeType")
    user_id: str = Field(alias="UserID")
    external_user_id: str = Field(alias="ExternalUserID")
    create_time: int = Field(alias="CreateTime")
    state: str | None = Field(default=None, alias="State")
    welcome_code: str | None = Field(default=None, alias="WelcomeCode")
    source: str | None = Field(default=None, alias="Source")
    fail_reason: str | None = Field(default=None, alias="FailReason")

    @classmethod
    def of(cls, event: CallbackEvent) -> ExternalContactChange:
        return cls.model_validate(event.fields)


class AppTextMessage(BaseModel):
    """An employee's text to the self-built app (the bot)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    user_id: str = Field(alias="FromUserName")
    content: str = Field(alias="Content")
    msg_id: str = Field(alias="MsgId")
    agent_id: str = Field(default="", alias="AgentID")
    create_time: int = Field(alias="CreateTime")

    @classmethod
    def of(cls, event: CallbackEvent) -> AppTextMessage:
        return cls.model_validate(event.fields)

"""Plaintext callback XML, laid out like WeCom's samples (/work/shared/wecom/events/*.xml):
one element per line, strings in CDATA, numbers bare."""

from __future__ import annotations

from collections.abc import Iterable

Field = tuple[str, str | int]


def _cdata(value: str) -> str:
    # "]]>" cannot appear inside CDATA: close the section around it, as XML writers do.
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render(fields: Iterable[Field]) -> str:
    lines = ["<xml>"]
    for name, value in fields:
        text = str(value) if isinstance(value, int) else _cdata(value)
        lines.append(f"<{name}>{text}</{name}>")
    lines.append("</xml>")
    return "\n".join(lines)


def external_contact_event(
    corp_id: str,
    change_type: str,
    create_time: int,
    userid: str,
    external_userid: str,
    **extra: str | None,
) -> str:
    """Event=change_external_contact. ``extra`` holds State, WelcomeCode, Source or FailReason;
    a None or empty value leaves the element out, as WeCom does when it has nothing to say.
    FailReason comes right after ChangeType, the others after ExternalUserID, as in WeCom's
    samples (doc 92130)."""
    head: list[Field] = [
        ("ToUserName", corp_id),
        ("FromUserName", "sys"),
        ("CreateTime", create_time),
        ("MsgType", "event"),
        ("Event", "change_external_contact"),
        ("ChangeType", change_type),
    ]
    present = [(name, value) for name, value in extra.items() if value]
    fields: list[Field] = [
        *head,
        *((name, value) for name, value in present if name == "FailReason"),
        ("UserID", userid),
        ("ExternalUserID", external_userid),
        *((name, value) for name, value in present if name != "FailReason"),
    ]
    return render(fields)


def app_text_message(
    corp_id: str, userid: str, create_time: int, content: str, msg_id: int, agent_id: int
) -> str:
    """An employee's text to the self-built app (MsgType=text)."""
    return render(
        [
            ("ToUserName", corp_id),
            ("FromUserName", userid),
            ("CreateTime", create_time),
            ("MsgType", "text"),
            ("Content", content),
            ("MsgId", msg_id),
            ("AgentID", agent_id),
        ]
    )

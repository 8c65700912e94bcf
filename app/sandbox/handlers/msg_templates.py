"""Mass-send preparation, minimal: externalcontact/add_msg_template (doc 92135) for single chats.

WeCom does not send anything here: it creates a task the sender confirms in the WeCom client.
The sandbox checks the request the way WeCom does and keeps what was prepared in
``msg_templates(state)`` (one ``MsgTemplate`` per call). Customers without a relation with the
sender come back in ``fail_list``. Group chats, tag filters and the task/result APIs are not
simulated yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.sandbox.errors import ApiError
from app.sandbox.handlers.base import Call, api, utf8_len
from app.sandbox.state import SandboxState

TEXT_MAX_BYTES = 4000
ATTACHMENTS_MAX = 9
EXTERNAL_USERIDS_MAX = 10000
ATTACHMENT_TYPES = {"image", "link", "miniprogram", "video", "file"}


@dataclass
class MsgTemplate:
    msgid: str
    sender: str
    external_userids: list[str]
    text: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    created_at: int = 0


def msg_templates(state: SandboxState) -> list[MsgTemplate]:
    """What add_msg_template prepared in this sandbox, oldest first."""
    with state.lock:
        return state.__dict__.setdefault("msg_templates", [])


@api("externalcontact/add_msg_template", "POST")
def add_msg_template(call: Call) -> dict[str, Any]:
    chat_type = call.text("chat_type", required=False) or "single"
    if chat_type != "single":
        raise ApiError(40058, "the sandbox simulates chat_type single only")
    external_userids = call.strings("external_userid", limit=EXTERNAL_USERIDS_MAX)
    sender = call.text("sender", required=False)
    if not external_userids and not sender:
        raise ApiError(40058, "external_userid or sender is required")
    text = call.body.get("text") or {}
    content = text.get("content", "") if isinstance(text, dict) else None
    attachments = call.body.get("attachments") or []
    if not isinstance(content, str) or not isinstance(attachments, list):
        raise ApiError(40058, "text.content must be a string and attachments a list")
    if utf8_len(content) > TEXT_MAX_BYTES:
        raise ApiError(45002, f"text.content is over {TEXT_MAX_BYTES} bytes")
    if len(attachments) > ATTACHMENTS_MAX:
        raise ApiError(40058, f"at most {ATTACHMENTS_MAX} attachments")
    for item in attachments:
        kind = item.get("msgtype") if isinstance(item, dict) else None
        if kind not in ATTACHMENT_TYPES or not isinstance(item.get(kind), dict):
            raise ApiError(40058, "each attachment needs msgtype and a body of that name")
    if not content and not attachments:
        raise ApiError(40058, "text and attachments cannot both be empty")
    state = call.state
    if sender:
        state.employee(sender)
        if not external_userids:  # only a sender: all of that member's customers
            external_userids = [ext for (owner, ext) in state.relations if owner == sender]
    fail_list = []
    for ext in external_userids:
        owners = [owner for (owner, customer) in state.relations if customer == ext]
        if ext not in state.customers or not owners or (sender and sender not in owners):
            fail_list.append(ext)
    template = MsgTemplate(
        msgid="msg" + state.ids.app_msgid()[:27],
        sender=sender,
        external_userids=[ext for ext in external_userids if ext not in fail_list],
        text=content,
        attachments=list(attachments),
        created_at=state.now(),
    )
    msg_templates(state).append(template)
    return {"fail_list": fail_list, "msgid": template.msgid}

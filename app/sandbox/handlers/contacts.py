"""Customer-contact APIs: external contacts, follow users, contact ways, welcome messages,
transfers (doc 92113/92114/92571/92228/92137/92125)."""

from __future__ import annotations

from typing import Any

from app.sandbox.errors import ApiError
from app.sandbox.handlers.base import Call, api, utf8_len
from app.sandbox.models import PendingTransfer, Relation, SentWelcome
from app.sandbox.state import SandboxState

WELCOME_TEXT_MAX_BYTES = 4000
WELCOME_ATTACHMENTS_MAX = 9
TRANSFER_MAX = 100


def _follow_user(state: SandboxState, relation: Relation) -> dict[str, Any]:
    tags = []
    for tag_id in relation.tag_ids:
        tag = state.tags.get(tag_id)
        if tag is not None and not tag.deleted:
            group = state.tag_groups[tag.group_id]
            tags.append({"group_name": group.group_name, "tag_name": tag.name, "tag_id": tag.id, "type": 1})
    item: dict[str, Any] = {
        "userid": relation.userid,
        "remark": relation.remark,
        "description": relation.description,
        "createtime": relation.createtime,
        "tags": tags,
        "remark_corp_name": "",
        "remark_mobiles": [],
        "oper_userid": relation.oper_userid,
        "add_way": relation.add_way,
    }
    if relation.state:  # WeCom includes state only for customers who came through a contact way
        item["state"] = relation.state
    return item


@api("externalcontact/get", "GET")
def get_external_contact(call: Call) -> dict[str, Any]:
    external_userid = call.text("external_userid")
    customer = call.state.customers.get(external_userid)
    if customer is None:
        raise ApiError(40096)
    relations = call.state.relations_of(external_userid)
    if not relations:
        raise ApiError(84061)
    contact = {
        "external_userid": customer.external_userid,
        "name": customer.name,
        "type": customer.type,
        "avatar": customer.avatar,
        "gender": customer.gender,
    }
    if customer.unionid:
        contact["unionid"] = customer.unionid
    return {
        "external_contact": contact,
        "follow_user": [_follow_user(call.state, r) for r in sorted(relations, key=lambda r: r.createtime)],
    }


@api("externalcontact/list", "GET")
def list_external_contacts(call: Call) -> dict[str, Any]:
    userid = call.text("userid")
    call.state.employee(userid)
    ids = [ext for (owner, ext) in call.state.relations if owner == userid]
    return {"external_userid": ids}


@api("externalcontact/get_follow_user_list", "GET")
def get_follow_user_list(call: Call) -> dict[str, Any]:
    return {"follow_user": sorted(e.userid for e in call.state.employees.values() if e.contact_enabled)}


@api("externalcontact/add_contact_way", "POST")
def add_contact_way(call: Call) -> dict[str, Any]:
    way = call.state.add_contact_way(call.body)
    answer = {"config_id": way.config_id}
    if way.qr_code:
        answer["qr_code"] = way.qr_code
    return answer


@api("externalcontact/send_welcome_msg", "POST")
def send_welcome_msg(call: Call) -> dict[str, Any]:
    code = call.text("welcome_code", required=False)
    text = call.body.get("text") or {}
    content = text.get("content", "") if isinstance(text, dict) else None
    attachments = call.body.get("attachments") or []
    if not isinstance(content, str) or not isinstance(attachments, list):
        raise ApiError(40058, "text.content must be a string and attachments a list")
    if utf8_len(content) > WELCOME_TEXT_MAX_BYTES:
        raise ApiError(45002, f"text.content is over {WELCOME_TEXT_MAX_BYTES} bytes")
    if len(attachments) > WELCOME_ATTACHMENTS_MAX:
        raise ApiError(40058, f"at most {WELCOME_ATTACHMENTS_MAX} attachments")
    if not content and not attachments:
        raise ApiError(40058, "text and attachments cannot both be empty")
    welcome = call.state.welcome_codes.get(code)
    if welcome is None:
        raise ApiError(41050)
    if welcome.used_at is not None:
        raise ApiError(41051)
    now = call.state.clock.time()
    if now >= welcome.expires_at:
        raise ApiError(41050, "welcome_code expired")
    welcome.used_at = now
    call.state.welcome_messages.append(
        SentWelcome(code, welcome.userid, welcome.external_userid, content, attachments, int(now))
    )
    return {}


@api("externalcontact/transfer_customer", "POST")
def transfer_customer(call: Call) -> dict[str, Any]:
    """On-job transfer: errcode 0 per customer only means the transfer started; it completes
    later (Platform.complete_transfers), as in WeCom where the takeover happens after 24 h."""
    handover, takeover = call.text("handover_userid"), call.text("takeover_userid")
    message = call.text("transfer_success_msg", limit=200, required=False)
    external_userids = call.strings("external_userid", limit=TRANSFER_MAX)
    if not external_userids:
        raise ApiError(40058, "external_userid is required")
    call.state.employee(handover)
    call.state.employee(takeover)
    results = []
    for external_userid in external_userids:
        errcode = 0
        if external_userid not in call.state.customers:
            errcode = 40096
        elif (handover, external_userid) not in call.state.relations:
            errcode = 84061
        elif external_userid in call.state.transfers:
            errcode = 40100
        else:
            call.state.transfers[external_userid] = PendingTransfer(
                handover, takeover, external_userid, message, call.state.now()
            )
        results.append({"external_userid": external_userid, "errcode": errcode})
    return {"customer": results}

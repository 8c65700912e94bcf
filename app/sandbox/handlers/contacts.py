"""Customer-contact APIs: external contacts, follow users, contact ways, welcome messages,
transfers (doc 92113/92114/92571/92228/92137/92125).

Contact ways (doc 92228): add_contact_way makes one; get_contact_way answers one by config_id
(missing 41043, unknown 41044); list_contact_way pages the config_ids of those created in a time
range — start_time at most 90 days back (its default), end_time now by default, ``limit`` 100 by
default and at most 1000, ``next_cursor`` "" on the last page — like WeCom, which lists only
contact ways made through the API since 2021-07-10 (every one in the sandbox is)."""

from __future__ import annotations

from typing import Any

from app.sandbox import massend
from app.sandbox.errors import ApiError
from app.sandbox.handlers.base import Call, api, utf8_len
from app.sandbox.models import ContactWay, PendingTransfer, Relation, SentWelcome
from app.sandbox.state import SandboxState

WELCOME_TEXT_MAX_BYTES = 4000
WELCOME_ATTACHMENTS_MAX = 9
TRANSFER_MAX = 100
CONTACT_WAY_LIST_DAYS = 90  # list_contact_way reaches back at most 90 days (its default start)
CONTACT_WAY_PAGE_DEFAULT, CONTACT_WAY_PAGE_MAX = 100, 1000
CONTACT_WAY_LISTED_SINCE = 1625846400  # 2021-07-10 00:00 China time: older ones are never listed


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


def _contact_way(way: ContactWay) -> dict[str, Any]:
    """get_contact_way's ``contact_way``: the fields add_contact_way took (the sandbox has no
    temporary-session ways, so is_temp is false and its fields are empty)."""
    item: dict[str, Any] = {
        "config_id": way.config_id,
        "type": way.type,
        "scene": way.scene,
        "style": way.style,
        "remark": way.remark,
        "skip_verify": way.skip_verify,
        "state": way.state,
        "user": list(way.user),
        "party": list(way.party),
        "is_temp": False,
        "expires_in": 0,
        "chat_expires_in": 0,
        "unionid": "",
        "conclusions": {},
    }
    if way.qr_code:
        item["qr_code"] = way.qr_code
    return item


@api("externalcontact/get_contact_way", "POST")
def get_contact_way(call: Call) -> dict[str, Any]:
    config_id = call.body.get("config_id")
    if config_id is None or config_id == "":
        raise ApiError(41043)
    if not isinstance(config_id, str):
        raise ApiError(40058, "config_id must be a string")
    way = call.state.contact_ways.get(config_id)
    if way is None:
        raise ApiError(41044, f"config_id {config_id!r} not found")
    return {"contact_way": _contact_way(way)}


def _timestamp(call: Call, name: str, default: int) -> int:
    value = call.body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(40058, f"{name} must be a unix timestamp (an integer)")
    return value


@api("externalcontact/list_contact_way", "POST")
def list_contact_way(call: Call) -> dict[str, Any]:
    """The config_ids of contact ways created in [start_time, end_time], oldest first."""
    now = call.state.now()
    earliest = now - CONTACT_WAY_LIST_DAYS * 86400
    start = _timestamp(call, "start_time", earliest)
    end = _timestamp(call, "end_time", now)
    if start < earliest:
        raise ApiError(40058, f"start_time is more than {CONTACT_WAY_LIST_DAYS} days ago")
    if start > end:
        raise ApiError(40058, "start_time is after end_time")
    limit = call.body.get("limit")
    if limit is None or limit == 0:
        limit = CONTACT_WAY_PAGE_DEFAULT
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= CONTACT_WAY_PAGE_MAX:
        raise ApiError(40058, f"limit must be an integer in 1..{CONTACT_WAY_PAGE_MAX}")
    ways = [
        way
        for way in call.state.contact_ways.values()  # in creation order
        if start <= way.created_at <= end and way.created_at >= CONTACT_WAY_LISTED_SINCE
    ]
    ways.sort(key=lambda way: way.created_at)  # stable: ties keep their creation order
    scope = ["contact_way", str(call.body.get("start_time", "")), str(call.body.get("end_time", ""))]
    chunk, next_cursor = massend.page(ways, scope, limit, call.text("cursor", required=False))
    return {"contact_way": [{"config_id": way.config_id} for way in chunk], "next_cursor": next_cursor}


@api("externalcontact/send_welcome_msg", "POST")
def send_welcome_msg(call: Call) -> dict[str, Any]:
    code = call.text("welcome_code", required=False)
    if not code:
        raise ApiError(41049)
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
        elif handover == takeover:
            errcode = 40130
        elif (handover, external_userid) not in call.state.relations:
            errcode = 40131
        elif external_userid in call.state.transfers:
            errcode = 40129
        else:
            call.state.transfers[external_userid] = PendingTransfer(
                handover, takeover, external_userid, message, call.state.now()
            )
        results.append({"external_userid": external_userid, "errcode": errcode})
    return {"customer": results}

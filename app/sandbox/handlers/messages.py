"""App messages (message/send, doc 90236) and the directory (user/get, doc 90196)."""

from __future__ import annotations

from typing import Any

from app.sandbox.errors import ApiError
from app.sandbox.handlers.base import Call, api, utf8_len
from app.sandbox.models import SentAppMessage

# Byte limits per message type and field; over them WeCom answers 45002.
CONTENT_LIMITS: dict[str, dict[str, int]] = {
    "text": {"content": 2048},
    "markdown": {"content": 2048},
    "textcard": {"title": 128, "description": 512},
}


def _recipients(call: Call) -> tuple[list[str], list[str], list[str]]:
    """(resolved userids, invalid users, invalid parties) for touser / toparty."""
    touser = call.text("touser", required=False)
    toparty = call.text("toparty", required=False)
    employees = call.state.employees
    if touser == "@all":
        return sorted(employees), [], []
    users = [u for u in touser.split("|") if u]
    valid = [u for u in users if u in employees]
    invalid = [u for u in users if u not in employees]
    bad_parties = []
    for party in (p for p in toparty.split("|") if p):
        members = [e.userid for e in employees.values() if party.isdigit() and int(party) in e.department]
        if members:
            valid += [m for m in members if m not in valid]
        else:
            bad_parties.append(party)
    return valid, invalid, bad_parties


DUPLICATE_CHECK_DEFAULT_SECONDS = 1800
DUPLICATE_CHECK_MAX_SECONDS = 4 * 3600


def _recent_duplicate(
    call: Call, users: list[str], msgtype: str, content: Any, now: int
) -> SentAppMessage | None:
    if not call.body.get("enable_duplicate_check"):
        return None
    interval = call.body.get("duplicate_check_interval") or DUPLICATE_CHECK_DEFAULT_SECONDS
    if (
        not isinstance(interval, int)
        or isinstance(interval, bool)
        or not 0 < interval <= DUPLICATE_CHECK_MAX_SECONDS
    ):
        raise ApiError(40058, f"duplicate_check_interval must be 1-{DUPLICATE_CHECK_MAX_SECONDS} seconds")
    for sent in reversed(call.state.app_messages):
        if now - sent.sent_at > interval:
            break
        if sent.msgtype == msgtype and sent.content == content and sent.touser == users:
            return sent
    return None


@api("message/send", "POST")
def send_message(call: Call) -> dict[str, Any]:
    agentid = call.body.get("agentid")
    if str(agentid) != str(call.state.config.agent_id):
        raise ApiError(40056)
    if call.app.agent_id != call.state.config.agent_id:
        raise ApiError(301002, "this access_token belongs to another app")
    msgtype = call.text("msgtype")
    content = call.body.get(msgtype)
    if not isinstance(content, dict):
        raise ApiError(40058, f"the {msgtype} body is missing")
    for name, limit in CONTENT_LIMITS.get(msgtype, {}).items():
        value = content.get(name, "")
        if not isinstance(value, str):
            raise ApiError(40058, f"{msgtype}.{name} must be a string")
        if utf8_len(value) > limit:
            raise ApiError(45002, f"{msgtype}.{name} is over {limit} bytes")
    valid, invalid_users, invalid_parties = _recipients(call)
    totag = call.text("totag", required=False)
    if not valid:
        raise ApiError(81013)
    now = call.state.now()
    duplicate = _recent_duplicate(call, valid, msgtype, content, now)
    if duplicate is not None:
        # enable_duplicate_check: the same content to the same people within the interval is
        # not sent again; WeCom answers as if it were, with the first message's id.
        msgid = duplicate.msgid
    else:
        msgid = call.state.ids.app_msgid()
        call.state.app_messages.append(SentAppMessage(msgid, int(agentid), valid, msgtype, content, now))
    answer = {
        "invaliduser": "|".join(invalid_users),
        "invalidparty": "|".join(invalid_parties),
        "invalidtag": totag,  # tags of members are not simulated: every tag is reported invalid
        "unlicenseduser": "",
        "msgid": msgid,
    }
    if msgtype == "template_card":
        answer["response_code"] = call.state.ids.welcome_code()
    return answer


@api("user/get", "GET")
def get_user(call: Call) -> dict[str, Any]:
    employee = call.state.employee(call.text("userid"))
    return {
        "userid": employee.userid,
        "name": employee.name,
        "department": employee.department,
        "main_department": employee.department[0] if employee.department else 1,
        "position": employee.position,
        "mobile": employee.mobile,
        "gender": employee.gender,
        "email": employee.email,
        "status": 1,
    }

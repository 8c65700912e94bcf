"""The state of mass sends (企业群发): tasks that members confirm, the results per customer, the
per-customer receiving limit, reminders and cancelling.

add_msg_template (doc 92135) sends nothing: it creates one task per member, and the member
confirms it in the WeCom client. The sandbox confirms a member's task ``mass_send_confirm_delay``
seconds after it was created, lazily (``settle`` runs before anything reads or changes mass
sends, on the sandbox clock; no thread), except for ``mass_send_decline_userids``;
``confirm`` confirms explicitly (the control API and ``Platform.advisor_confirms_mass_send``).

Confirming sends to each customer of the task: status 1 sent; 2 when the relation is gone (the
advisor deleted the customer, or the customer deleted the advisor); 3 when the customer already
received as many mass messages as the corp's receiving rule allows in the current natural period
(China time). The relation is judged when the sandbox settles the task, not at the exact moment
it became due (the sandbox keeps no history of relations).

Every function expects the caller to hold ``state.lock``.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from app.sandbox.errors import ApiError, SandboxError
from app.sandbox.models import MassSend, MassSendResult, MassSendTask

if TYPE_CHECKING:
    from app.sandbox.state import SandboxState

CHINA = timezone(timedelta(hours=8))  # WeCom's natural days and months are China's
REMINDS_PER_DAY = 3  # doc 97610: at most three reminders per mass send within 24 hours
REMIND_WINDOW = 24 * 3600
# doc 93338: get_groupmsg_task / get_groupmsg_send_result take a limit of at most 1000 (default
# 500), get_groupmsg_list_v2 at most 100 (default 50); a larger limit takes the default.
PAGE_DEFAULT, PAGE_MAX = 500, 1000
LIST_PAGE_DEFAULT, LIST_PAGE_MAX = 50, 100

NOT_SENT, SENT, NOT_FRIEND, LIMITED = 0, 1, 2, 3
TASK_NOT_SENT, TASK_SENT = 0, 2  # get_groupmsg_task's status


# -- the receiving limit --------------------------------------------------------------------------


def receiving_period(rule: str, at: int) -> tuple[int, int]:
    """(limit, start of the natural period containing ``at``) for a receiving rule."""
    local = datetime.fromtimestamp(at, CHINA)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if rule == "day":
        return 1, int(day.timestamp())
    if rule == "week":
        return 7, int((day - timedelta(days=day.weekday())).timestamp())
    month = day.replace(day=1)
    if rule == "month4":
        return 4, int(month.timestamp())
    return calendar.monthrange(local.year, local.month)[1], int(month.timestamp())


def received(state: SandboxState, external_userid: str, at: int) -> int:
    """How many mass messages the customer received in the natural period containing ``at``."""
    _, start = receiving_period(state.config.mass_send_receive_rule, at)
    return sum(1 for t in state.mass_received.get(external_userid, []) if start <= t <= at)


def over_limit(state: SandboxState, external_userid: str, at: int) -> bool:
    limit, _ = receiving_period(state.config.mass_send_receive_rule, at)
    return received(state, external_userid, at) >= limit


# -- creating and confirming ----------------------------------------------------------------------


def create(
    state: SandboxState,
    sender: str,
    owners: dict[str, list[str]],
    text: str,
    attachments: list[dict[str, Any]],
    fail_list: list[str],
) -> MassSend:
    """A new mass send with one task per member in ``owners`` (userid → customers)."""
    settle(state)
    send = MassSend(
        msgid="msg" + state.ids.app_msgid()[:27],
        sender=sender,
        external_userids=[ext for customers in owners.values() for ext in customers],
        text=text,
        attachments=list(attachments),
        created_at=state.now(),
        fail_list=list(fail_list),
    )
    for userid, customers in owners.items():
        if customers:
            send.tasks[userid] = MassSendTask(userid, [MassSendResult(ext) for ext in customers])
    state.mass_sends[send.msgid] = send
    return send


def _due(state: SandboxState, send: MassSend, task: MassSendTask) -> int | None:
    """When the member confirms by themselves, or None (never)."""
    delay = state.config.mass_send_confirm_delay
    if delay is None or delay < 0 or task.userid in state.config.mass_send_decline_userids:
        return None
    return send.created_at + int(delay)


def _confirm_task(state: SandboxState, send: MassSend, task: MassSendTask, at: int) -> dict[str, Any]:
    task.state, task.send_time = "sent", at
    for result in task.results:
        relation = state.relations.get((task.userid, result.external_userid))
        if relation is None or relation.deleted_by_customer:
            result.status = NOT_FRIEND
        elif over_limit(state, result.external_userid, at):
            result.status = LIMITED
        else:
            result.status = SENT
            state.mass_received.setdefault(result.external_userid, []).append(at)
        result.send_time = at
    return summary(send, task)


def summary(send: MassSend, task: MassSendTask) -> dict[str, Any]:
    statuses = [r.status for r in task.results]
    return {
        "msgid": send.msgid,
        "userid": task.userid,
        "state": task.state,
        "send_time": task.send_time,
        "customers": len(statuses),
        "sent": statuses.count(SENT),
        "not_friend": statuses.count(NOT_FRIEND),
        "limited": statuses.count(LIMITED),
    }


def settle(state: SandboxState) -> int:
    """Confirm every pending task whose confirm delay has passed, in the order they became due
    (so the receiving limit counts them in order). Returns how many were confirmed."""
    now = state.now()
    due = []
    for send in state.mass_sends.values():
        for task in send.tasks.values():
            if task.state == "pending":
                at = _due(state, send, task)
                if at is not None and at <= now:
                    due.append((at, send, task))
    due.sort(key=lambda item: item[0])
    for at, send, task in due:
        _confirm_task(state, send, task, at)
    return len(due)


def confirm(state: SandboxState, userid: str | None = None, msgid: str | None = None) -> list[dict[str, Any]]:
    """Members confirm their pending tasks now: ``userid``'s (any member, decliners included),
    ``msgid``'s, or both; neither: every pending task except the decliners'."""
    settle(state)
    if msgid is not None and msgid not in state.mass_sends:
        raise SandboxError(f"unknown msgid {msgid!r}")
    if userid is not None and userid not in state.employees:
        raise SandboxError(f"unknown advisor {userid!r}")
    decliners = set(state.config.mass_send_decline_userids)
    confirmed = []
    for send in state.mass_sends.values():
        if msgid is not None and send.msgid != msgid:
            continue
        for task in send.tasks.values():
            if task.state != "pending" or (userid is not None and task.userid != userid):
                continue
            if userid is None and task.userid in decliners:
                continue
            confirmed.append(_confirm_task(state, send, task, state.now()))
    return confirmed


# -- the task and result APIs ---------------------------------------------------------------------


def get(state: SandboxState, msgid: str) -> MassSend:
    settle(state)
    send = state.mass_sends.get(msgid)
    if send is None:
        raise ApiError(40058, f"msgid {msgid!r} not found")
    return send


def remind(state: SandboxState, msgid: str) -> None:
    send = get(state, msgid)
    now = state.now()
    recent = [t for t in send.reminders if t > now - REMIND_WINDOW]
    if len(recent) >= REMINDS_PER_DAY:
        raise ApiError(45009, f"at most {REMINDS_PER_DAY} reminders per msgid within 24 hours")
    send.reminders.append(now)


def cancel(state: SandboxState, msgid: str) -> None:
    """Tasks not yet confirmed never send; what was sent stays (doc 97611)."""
    send = get(state, msgid)
    for task in send.tasks.values():
        if task.state == "pending":
            task.state = "cancelled"
    if send.cancelled_at is None:
        send.cancelled_at = state.now()


def page_size(value: Any, default: int = PAGE_DEFAULT, maximum: int = PAGE_MAX) -> int:
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError(40058, "limit must be a positive integer")
    return default if value > maximum else value


def encode_cursor(scope: list[str], offset: int) -> str:
    raw = json.dumps([*scope, offset], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, scope: list[str]) -> int:
    if not cursor:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise ApiError(40058, "invalid cursor") from None
    if not isinstance(decoded, list) or decoded[:-1] != scope or not isinstance(decoded[-1], int):
        raise ApiError(40058, "invalid cursor")
    return decoded[-1]


def page(
    items: list[Any],
    scope: list[str],
    limit: Any,
    cursor: str,
    default: int = PAGE_DEFAULT,
    maximum: int = PAGE_MAX,
) -> tuple[list[Any], str]:
    """One page of ``items`` and the next cursor ("" on the last page)."""
    size, offset = page_size(limit, default, maximum), decode_cursor(cursor, scope)
    chunk = items[offset : offset + size]
    more = offset + size < len(items)
    return chunk, encode_cursor(scope, offset + size) if more else ""


def task_entry(task: MassSendTask) -> dict[str, Any]:
    status = TASK_SENT if task.state == "sent" else TASK_NOT_SENT
    entry: dict[str, Any] = {"userid": task.userid, "status": status}
    if task.state == "sent":
        entry["send_time"] = task.send_time
    return entry


def result_entry(task: MassSendTask, result: MassSendResult) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "external_userid": result.external_userid,
        "userid": task.userid,
        "status": result.status,
    }
    if result.status == SENT:  # doc 93338: send_time only for status 1
        entry["send_time"] = result.send_time
    return entry


# -- reading back ---------------------------------------------------------------------------------


def as_dict(send: MassSend) -> dict[str, Any]:
    return {
        "msgid": send.msgid,
        "sender": send.sender,
        "text": send.text,
        "attachments": send.attachments,
        "created_at": send.created_at,
        "cancelled_at": send.cancelled_at,
        "fail_list": send.fail_list,
        "reminders": send.reminders,
        "tasks": [
            {
                **summary(send, task),
                "results": [
                    {"external_userid": r.external_userid, "status": r.status, "send_time": r.send_time}
                    for r in task.results
                ],
            }
            for task in send.tasks.values()
        ],
    }


def counts(state: SandboxState) -> dict[str, Any]:
    settle(state)
    tasks = {"pending": 0, "sent": 0, "cancelled": 0}
    results = {"unsent": 0, "sent": 0, "not_friend": 0, "limited": 0}
    names = {NOT_SENT: "unsent", SENT: "sent", NOT_FRIEND: "not_friend", LIMITED: "limited"}
    reminders = 0
    for send in state.mass_sends.values():
        reminders += len(send.reminders)
        for task in send.tasks.values():
            tasks[task.state] += 1
            for result in task.results:
                results[names[result.status]] += 1
    return {
        "mass_sends": len(state.mass_sends),
        "mass_send_tasks": tasks,
        "mass_send_results": results,
        "mass_send_reminders": reminders,
    }

"""Finding a mass-send task (add_msg_template) that WeCom made but whose answer we never recorded.

add_msg_template has no idempotency key. When a call's answer was lost (the process died before
writing it down, or a timeout/5xx left the outcome unknown), calling again could give the same
customers a second task. WeCom lists the corp's single-chat sends by creator and time
(get_groupmsg_list_v2) and each task's customers (get_groupmsg_send_result), so the caller asks
first: the lost task is the one since the attempt began, with our text, whose results for that
advisor hold some of the call's customers and nobody else (WeCom leaves the fail_list out of a
task), and that is not already recorded as another call's task (``known``).
Both lists are read to their last page.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from app.wecom.client import WeComClient, cursor_pages


@dataclass(frozen=True)
class FoundTask:
    msgid: str
    customers: frozenset[str]  # the task's customers (the call's minus WeCom's fail_list)


def find_task(
    client: WeComClient,
    sender: str,
    text: str,
    customers: Collection[str],
    since: int,
    until: int,
    known: Collection[str] = (),
) -> FoundTask | None:
    """The task ``sender`` made between ``since`` and ``until`` (unix seconds) with ``text`` for
    some of ``customers`` and nobody else, or None. ``known``: msgids already recorded as other
    calls' tasks, never adopted (another campaign with the same text to the same customers)."""
    wanted = set(customers)
    # Not filtered by creator: WeCom leaves an API-made send's creator out of the list (doc
    # 93338), so whether its creator filter matches such a send is doubtful; a send of another
    # advisor is told apart below, its send result for ``sender`` being empty.
    sends = cursor_pages(
        lambda cursor: client.get_groupmsg_list_v2(since, until, cursor=cursor), "group_msg_list"
    )
    for item in sends:
        if (item.get("text") or {}).get("content", "") != text:
            continue
        msgid = str(item["msgid"])
        if msgid in known:
            continue
        listed = cursor_pages(
            lambda cursor, msgid=msgid: client.get_groupmsg_send_result(msgid, sender, cursor=cursor),
            "send_list",
        )
        got = {entry["external_userid"] for entry in listed}
        if got and got <= wanted:
            return FoundTask(msgid, frozenset(got))
    return None

"""Mass sends to customers (企业群发, single chats): externalcontact/add_msg_template (doc 92135),
get_groupmsg_task and get_groupmsg_send_result (doc 93338), remind_groupmsg_send (97610) and
cancel_groupmsg_send (97611).

add_msg_template sends nothing: it creates one task per member (the sender, or each customer's
member) that the member confirms in the WeCom client; ``app.sandbox.massend`` keeps the tasks,
confirms them after ``mass_send_confirm_delay`` and applies the per-customer receiving limit.
Customers that are not (the sender's) customers come back in ``fail_list``. Attachments naming
media (an image's ``media_id``, a mini-program's ``pic_media_id``, a video's or file's
``media_id``) need it uploaded through media/upload within the last 3 days, else 40007.
``msg_templates(state)`` lists what was prepared (one ``MassSend`` per call, oldest first). Group
chats (chat_type group) are not simulated: they answer 40058.
"""

from __future__ import annotations

from typing import Any

from app.sandbox import massend
from app.sandbox.errors import ApiError
from app.sandbox.handlers.base import Call, api, utf8_len
from app.sandbox.models import MassSend, Relation
from app.sandbox.state import SandboxState

TEXT_MAX_BYTES = 4000
ATTACHMENTS_MAX = 9
EXTERNAL_USERIDS_MAX = 10000
TAG_LIST_MAX = 100
# Each attachment type's required fields, and byte limits of its fields (doc 92135).
ATTACHMENT_REQUIRED: dict[str, tuple[str, ...]] = {
    "image": (),  # media_id or pic_url, checked apart
    "link": ("title", "url"),
    "miniprogram": ("title", "pic_media_id", "appid", "page"),
    "video": ("media_id",),
    "file": ("media_id",),
}
# Fields that name uploaded media (media/upload): unknown or expired (3 days) → 40007.
ATTACHMENT_MEDIA: dict[str, str] = {
    "image": "media_id",
    "miniprogram": "pic_media_id",
    "video": "media_id",
    "file": "media_id",
}
ATTACHMENT_MAX_BYTES: dict[str, dict[str, int]] = {
    "link": {"title": 128, "desc": 512, "url": 2048},
    "miniprogram": {"title": 64},
}

MsgTemplate = MassSend  # the name tests of the SOP runner know


def msg_templates(state: SandboxState) -> list[MassSend]:
    """What add_msg_template prepared in this sandbox, oldest first."""
    with state.lock:
        return list(state.mass_sends.values())


def _content(state: SandboxState, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    text = body.get("text") or {}
    content = text.get("content", "") if isinstance(text, dict) else None
    attachments = body.get("attachments") or []
    if not isinstance(content, str) or not isinstance(attachments, list):
        raise ApiError(40058, "text.content must be a string and attachments a list")
    if utf8_len(content) > TEXT_MAX_BYTES:
        raise ApiError(45002, f"text.content is over {TEXT_MAX_BYTES} bytes")
    if len(attachments) > ATTACHMENTS_MAX:
        raise ApiError(40058, f"at most {ATTACHMENTS_MAX} attachments")
    for index, item in enumerate(attachments):
        kind = item.get("msgtype") if isinstance(item, dict) else None
        if kind not in ATTACHMENT_REQUIRED or not isinstance(item.get(kind), dict):
            kinds = ", ".join(ATTACHMENT_REQUIRED)
            raise ApiError(40058, f"attachments[{index}] needs msgtype ({kinds}) and a body of that name")
        fields = item[kind]
        if not all(isinstance(value, str) for value in fields.values()):
            raise ApiError(40058, f"attachments[{index}].{kind} takes strings")
        missing = [name for name in ATTACHMENT_REQUIRED[kind] if not fields.get(name)]
        if kind == "image" and not (fields.get("media_id") or fields.get("pic_url")):
            missing = ["media_id or pic_url"]
        if missing:
            raise ApiError(40058, f"attachments[{index}].{kind} needs {', '.join(missing)}")
        for name, limit in ATTACHMENT_MAX_BYTES.get(kind, {}).items():
            if utf8_len(fields.get(name, "")) > limit:
                raise ApiError(40058, f"attachments[{index}].{kind}.{name} is over {limit} bytes")
    if not content and not attachments:
        raise ApiError(40058, "text and attachments cannot both be empty")
    for item in attachments:
        media_id = item[item["msgtype"]].get(ATTACHMENT_MEDIA.get(item["msgtype"], ""))
        if media_id:
            state.live_media(media_id)
    return content, attachments


def _tag_filter(state: SandboxState, value: Any) -> list[set[str]] | None:
    """tag_filter.group_list as sets of tag ids: OR within a set, AND across sets."""
    if value is None:
        return None
    groups = value.get("group_list") if isinstance(value, dict) else None
    if not isinstance(groups, list) or not groups:
        raise ApiError(40058, "tag_filter needs group_list [{tag_list: [tag_id]}]")
    sets = []
    for group in groups:
        tags = group.get("tag_list") if isinstance(group, dict) else None
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
            raise ApiError(40058, "each tag_filter group needs a tag_list of tag ids")
        if len(tags) > TAG_LIST_MAX:
            raise ApiError(40058, f"a tag_list takes at most {TAG_LIST_MAX} tags")
        for tag_id in tags:
            state.live_tag(tag_id)
        sets.append(set(tags))
    return sets


def _latest(relations: list[Relation]) -> Relation:
    """WeCom hands a customer's message to the member who chatted with them last; the sandbox
    has no chats, so the member the customer added last stands for it."""
    return max(relations, key=lambda r: r.createtime)


@api("externalcontact/add_msg_template", "POST")
def add_msg_template(call: Call) -> dict[str, Any]:
    chat_type = call.text("chat_type", required=False) or "single"
    if chat_type == "group":
        raise ApiError(40058, "chat_type group (customer group chats) is not simulated: use single")
    if chat_type != "single":
        raise ApiError(40058, "chat_type is single or group")
    external_userids = list(dict.fromkeys(call.strings("external_userid", limit=EXTERNAL_USERIDS_MAX)))
    sender = call.text("sender", required=False)
    state = call.state
    tag_filter = _tag_filter(state, call.body.get("tag_filter"))
    if not external_userids and not sender and tag_filter is None:
        raise ApiError(40058, "external_userid, sender or tag_filter is required")
    content, attachments = _content(state, call.body)
    if sender:
        state.employee(sender)
    owners: dict[str, list[str]] = {}
    fail_list: list[str] = []
    if external_userids:  # the list wins over tag_filter
        wanted = set(external_userids)
        of_customer: dict[str, list[Relation]] = {}
        for (userid, ext), relation in state.relations.items():
            if ext in wanted and (not sender or userid == sender):
                of_customer.setdefault(ext, []).append(relation)
        for ext in external_userids:
            relations = of_customer.get(ext)
            if ext not in state.customers or not relations:
                fail_list.append(ext)
            else:
                owners.setdefault(_latest(relations).userid, []).append(ext)
    else:  # all the sender's (or the corp's) customers, tag_filter applied
        by_customer: dict[str, list[Relation]] = {}
        for (userid, ext), relation in state.relations.items():
            if sender and userid != sender:
                continue
            if tag_filter and not all(group & set(relation.tag_ids) for group in tag_filter):
                continue
            by_customer.setdefault(ext, []).append(relation)
        for ext, relations in by_customer.items():
            owners.setdefault(_latest(relations).userid, []).append(ext)
    send = massend.create(state, sender, owners, content, attachments, fail_list)
    return {"fail_list": fail_list, "msgid": send.msgid}


@api("externalcontact/get_groupmsg_task", "POST")
def get_groupmsg_task(call: Call) -> dict[str, Any]:
    msgid = call.text("msgid")
    send = massend.get(call.state, msgid)
    cursor = call.text("cursor", required=False)
    tasks, next_cursor = massend.page(
        list(send.tasks.values()), ["task", msgid], call.body.get("limit"), cursor
    )
    return {"task_list": [massend.task_entry(task) for task in tasks], "next_cursor": next_cursor}


@api("externalcontact/get_groupmsg_send_result", "POST")
def get_groupmsg_send_result(call: Call) -> dict[str, Any]:
    msgid, userid = call.text("msgid"), call.text("userid")
    send = massend.get(call.state, msgid)
    task = send.tasks.get(userid)
    results = task.results if task else []
    chunk, next_cursor = massend.page(
        results, ["result", msgid, userid], call.body.get("limit"), call.text("cursor", required=False)
    )
    entries = [massend.result_entry(task, result) for result in chunk] if task else []
    return {"send_list": entries, "next_cursor": next_cursor}


@api("externalcontact/remind_groupmsg_send", "POST")
def remind_groupmsg_send(call: Call) -> dict[str, Any]:
    massend.remind(call.state, call.text("msgid"))
    return {}


@api("externalcontact/cancel_groupmsg_send", "POST")
def cancel_groupmsg_send(call: Call) -> dict[str, Any]:
    massend.cancel(call.state, call.text("msgid"))
    return {}


LIST_RANGE_MAX_SECONDS = 31 * 86400  # WeCom: start_time and end_time at most one month apart


@api("externalcontact/get_groupmsg_list_v2", "POST")
def get_groupmsg_list_v2(call: Call) -> dict[str, Any]:
    """The corp's mass sends created in a time range, optionally by one creator (doc 93338).
    Every send made through add_msg_template is a corp send (create_type 0) to single chats, and
    WeCom leaves ``creator`` out of an API-made send's entry; the sandbox takes the strict reading
    of that, a ``creator`` query matching no API-made send (so none of the sandbox's), so that
    nothing in the project relies on such a filter."""
    chat_type = call.text("chat_type")
    if chat_type not in ("single", "group"):
        raise ApiError(40058, "chat_type must be single or group")
    start, end = call.body.get("start_time"), call.body.get("end_time")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in (start, end)) or not (
        0 <= end - start <= LIST_RANGE_MAX_SECONDS
    ):
        raise ApiError(40058, "start_time and end_time: a range of at most one month")
    creator = call.text("creator", required=False)
    filter_type = call.body.get("filter_type", 2)
    if filter_type not in (0, 1, 2):
        raise ApiError(40058, "filter_type is 0 (corp), 1 (personal) or 2 (all)")
    sends = [
        send
        for send in msg_templates(call.state)
        if start <= send.created_at <= end
        and not creator  # API-made sends have no creator
        and filter_type != 1
        and chat_type == "single"
    ]
    sends.sort(key=lambda send: (send.created_at, send.msgid))
    chunk, next_cursor = massend.page(
        sends,
        ["list", creator, str(start), str(end)],
        call.body.get("limit"),
        call.text("cursor", required=False),
        massend.LIST_PAGE_DEFAULT,
        massend.LIST_PAGE_MAX,
    )
    entries = [
        {
            "msgid": send.msgid,
            "create_type": 0,
            "create_time": send.created_at,
            "text": {"content": send.text},
            "attachments": send.attachments,
        }
        for send in chunk
    ]
    return {"group_msg_list": entries, "next_cursor": next_cursor}

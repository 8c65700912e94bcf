"""Corp tag APIs (doc 92117/92118): the tag library and tagging a customer."""

from __future__ import annotations

from typing import Any

from app.sandbox.errors import ApiError
from app.sandbox.handlers.base import Call, api
from app.sandbox.models import Tag, TagGroup


def _tag(tag: Tag, with_deleted: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": tag.id,
        "name": tag.name,
        "create_time": tag.create_time,
        "order": tag.order,
    }
    if with_deleted:
        item["deleted"] = tag.deleted
    return item


def _group(group: TagGroup, tags: list[Tag], with_deleted: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {
        "group_id": group.group_id,
        "group_name": group.group_name,
        "create_time": group.create_time,
        "order": group.order,
        "tag": [_tag(tag, with_deleted) for tag in tags],
    }
    if with_deleted:
        item["deleted"] = group.deleted
    return item


@api("externalcontact/get_corp_tag_list", "POST")
def get_corp_tag_list(call: Call) -> dict[str, Any]:
    """All groups, or the given groups, or the groups of the given tag ids (with only those tags).
    As documented (doc 92117: 同时传递tag_id和group_id时，忽略tag_id，仅以group_id作为过滤条件),
    tag_id is ignored when group_id is given."""
    tag_ids, group_ids = set(call.strings("tag_id")), set(call.strings("group_id"))
    groups = []
    for group in call.state.tag_groups.values():
        if group.deleted:
            continue
        tags = [tag for tag in group.tags if not tag.deleted]
        if group_ids:
            if group.group_id not in group_ids:
                continue
        elif tag_ids:
            tags = [tag for tag in tags if tag.id in tag_ids]
            if not tags:
                continue
        groups.append(_group(group, tags))
    return {"tag_group": groups}


@api("externalcontact/add_corp_tag", "POST")
def add_corp_tag(call: Call) -> dict[str, Any]:
    tags = call.body.get("tag")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, dict) for t in tags):
        raise ApiError(40058, "tag must be a non-empty list of {name, order}")
    group_id = call.text("group_id", required=False)
    group_name = call.text("group_name", required=False)
    order = call.body.get("order", 0)
    group = call.state.add_tags(group_id or None, group_name, tags, int(order) if order else 0)
    return {"tag_group": _group(group, group.tags, with_deleted=False)}


@api("externalcontact/mark_tag", "POST")
def mark_tag(call: Call) -> dict[str, Any]:
    userid, external_userid = call.text("userid"), call.text("external_userid")
    add, remove = call.strings("add_tag"), call.strings("remove_tag")
    if not add and not remove:
        raise ApiError(40058, "add_tag and remove_tag cannot both be empty")
    call.state.employee(userid)
    relation = call.state.relation(userid, external_userid)
    for tag_id in [*add, *remove]:
        call.state.live_tag(tag_id)
    removed = set(remove)
    relation.tag_ids = [t for t in relation.tag_ids if t not in removed]
    relation.tag_ids += [t for t in dict.fromkeys(add) if t not in relation.tag_ids]
    return {}

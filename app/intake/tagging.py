"""The corp tag library (企业客户标签): a copy of WeCom's in ``corp_tags``, and the tag ids intake
needs, created in WeCom when missing.

WeCom is the source of truth. ``sync_corp_tags`` copies all of it; the change_external_tag
handlers (workers/handlers/tags.py) keep the copy current one tag or group at a time. A tag that
WeCom no longer returns is flagged ``deleted``, never removed: old interactions and follow
relations still resolve its name.

Functions that call WeCom and write come in two halves, so a handler can call WeCom before it
writes anything (workers/handlers/context.py): ``fetch_tags`` (WeCom only) and ``apply_sync`` /
``upsert_tags`` / ``mark_deleted`` (the database only, in the caller's session).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.services import Services
from app.store.db import insert_for
from app.store.models import CorpTag
from app.wecom.client import contact_client
from app.wecom.errors import WeComError

# Tag groups intake tags new customers with (app/intake/state.py State.tags).
GROUP_CHANNEL = "渠道"
GROUP_MODEL = "意向车型"
GROUP_CAMPAIGN = "活动"

NAME_MAX = 30  # WeCom's limit for tag and group names, in characters
TAG_EXISTS = 40071  # add_corp_tag: a tag of that name is already in the group
INVALID_TAG = 40068  # invalid tag or group id: it does not exist (any more)
_CHUNK = 500  # ids per IN (...)
_ADD_ROUNDS = 3  # tag_ids_for: rounds of add (or re-sync after a conflict) before giving up

T = CorpTag.__table__


@dataclass(frozen=True)
class RemoteTag:
    """One tag as WeCom reports it."""

    tag_id: str
    group_id: str
    group_name: str
    name: str
    order: int
    deleted: bool


@dataclass
class SyncReport:
    groups: int = 0  # live groups WeCom returned
    tags: int = 0  # live tags WeCom returned
    created: int = 0
    updated: int = 0
    deleted: int = 0  # newly flagged deleted

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.groups} groups, {self.tags} tags: {self.created} created, {self.updated} updated, "
            f"{self.deleted} flagged deleted"
        )


# -- WeCom ----------------------------------------------------------------------------------------


def _remote_tags(groups: Any) -> list[RemoteTag]:
    if isinstance(groups, dict):  # add_corp_tag answers one group, get_corp_tag_list a list
        groups = [groups]
    tags = []
    for group in groups or []:
        group_deleted = bool(group.get("deleted", False))
        for tag in group.get("tag") or []:
            tags.append(
                RemoteTag(
                    tag_id=str(tag["id"]),
                    group_id=str(group["group_id"]),
                    group_name=str(group.get("group_name", "")),
                    name=str(tag.get("name", "")),
                    order=int(tag.get("order", 0) or 0),
                    deleted=group_deleted or bool(tag.get("deleted", False)),
                )
            )
    return tags


def fetch_tags(
    svc: Services, *, tag_ids: list[str] | None = None, group_ids: list[str] | None = None
) -> list[RemoteTag]:
    """get_corp_tag_list: every tag, or the given tags, or the given groups' tags. A tag or group
    that no longer exists is simply not in the answer (also when WeCom answers 40068)."""
    data: dict[str, Any] = {}
    if tag_ids:
        data["tag_id"] = list(tag_ids)
    if group_ids:
        data["group_id"] = list(group_ids)
    try:
        result = contact_client(svc).post("externalcontact/get_corp_tag_list", data=data)
    except WeComError as exc:
        if exc.errcode == INVALID_TAG and data:
            return []
        raise
    return _remote_tags(result.get("tag_group"))


def add_tags(
    svc: Services, group_name: str, names: list[str], group_id: str | None = None
) -> list[RemoteTag]:
    """add_corp_tag: the new tags (WeCom adds them to the group with that id, else to the group of
    that name, creating it if there is none). Raises WeComError 40071 if one already exists."""
    data: dict[str, Any] = {"tag": [{"name": name} for name in names]}
    if group_id:
        data["group_id"] = group_id
    else:
        data["group_name"] = group_name
    result = contact_client(svc).post("externalcontact/add_corp_tag", data=data)
    return _remote_tags(result.get("tag_group"))


# -- the database ---------------------------------------------------------------------------------



def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def upsert_tags(session: Session, tags: Iterable[RemoteTag], now: datetime) -> tuple[int, int]:
    """Store tags as WeCom reported them; return (created, updated) — unchanged rows only get
    a new ``synced_at``."""
    by_id = {tag.tag_id: tag for tag in tags}
    if not by_id:
        return 0, 0
    stored: dict[str, tuple[Any, ...]] = {}
    for chunk in _chunks(sorted(by_id)):
        for row in session.execute(
            select(T.c.tag_id, T.c.group_id, T.c.group_name, T.c.name, T.c.sort_order, T.c.deleted).where(
                T.c.tag_id.in_(chunk)
            )
        ):
            stored[row[0]] = tuple(row)
    created = updated = 0
    rows = []
    for tag in by_id.values():
        values = (tag.tag_id, tag.group_id, tag.group_name, tag.name, tag.order, tag.deleted)
        if tag.tag_id not in stored:
            created += 1
        elif stored[tag.tag_id] != values:
            updated += 1
        rows.append(
            {
                "tag_id": tag.tag_id,
                "group_id": tag.group_id,
                "group_name": tag.group_name,
                "name": tag.name,
                "sort_order": tag.order,
                "deleted": tag.deleted,
                "synced_at": now,
            }
        )
    insert = insert_for(session)
    for start in range(0, len(rows), _CHUNK):
        stmt = insert(T).values(rows[start : start + _CHUNK])
        excluded = stmt.excluded
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[T.c.tag_id],
                set_={
                    "group_id": excluded.group_id,
                    "group_name": excluded.group_name,
                    "name": excluded.name,
                    "sort_order": excluded.sort_order,
                    "deleted": excluded.deleted,
                    "synced_at": excluded.synced_at,
                },
            )
        )
    return created, updated


def mark_deleted(
    session: Session,
    now: datetime,
    *,
    tag_ids: Iterable[str] = (),
    group_ids: Iterable[str] = (),
) -> int:
    """Flag the given tags, and every tag of the given groups, deleted; return how many were
    live until now."""
    flagged = 0
    for column, keys in ((T.c.tag_id, sorted(set(tag_ids))), (T.c.group_id, sorted(set(group_ids)))):
        for chunk in _chunks(keys):
            result = session.execute(
                update(T).where(column.in_(chunk), T.c.deleted.is_(False)).values(deleted=True, synced_at=now)
            )
            flagged += result.rowcount or 0  # type: ignore[attr-defined]
    return flagged


def apply_sync(
    session: Session, tags: list[RemoteTag], now: datetime, *, group_ids: list[str] | None = None
) -> SyncReport:
    """Make the stored library match WeCom's answer: upsert every tag in it and flag deleted the
    live tags it lacks — all of them for a full answer, or those of ``group_ids`` for an answer
    about those groups."""
    report = SyncReport(
        groups=len({t.group_id for t in tags if not t.deleted}), tags=sum(not t.deleted for t in tags)
    )
    report.created, report.updated = upsert_tags(session, tags, now)
    returned = {t.tag_id for t in tags}
    query = select(T.c.tag_id).where(T.c.deleted.is_(False))
    if group_ids is not None:
        query = query.where(T.c.group_id.in_(group_ids))
    gone = [tag_id for tag_id in session.scalars(query) if tag_id not in returned]
    report.deleted = mark_deleted(session, now, tag_ids=gone)
    return report


def sync_corp_tags(svc: Services) -> SyncReport:
    """Copy WeCom's whole tag library into corp_tags (one get_corp_tag_list, one transaction)."""
    tags = fetch_tags(svc)
    with svc.sessions.begin() as session:
        return apply_sync(session, tags, svc.clock.now())


def sync_groups(svc: Services, group_ids: list[str]) -> SyncReport:
    """Re-read the given groups from WeCom and store them (own transaction)."""
    tags = fetch_tags(svc, group_ids=group_ids)
    with svc.sessions.begin() as session:
        return apply_sync(session, tags, svc.clock.now(), group_ids=group_ids)


def tag_names(session: Session, tag_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """tag id → (group name, tag name), deleted tags included; unknown ids are left out."""
    names: dict[str, tuple[str, str]] = {}
    for chunk in _chunks(sorted(set(tag_ids))):
        for tag_id, group_name, name in session.execute(
            select(T.c.tag_id, T.c.group_name, T.c.name).where(T.c.tag_id.in_(chunk))
        ):
            names[tag_id] = (group_name, name)
    return names


# -- the tags intake needs ------------------------------------------------------------------------


def _check_name(name: str, what: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise ValueError(f"{what} {name!r} must be 1-{NAME_MAX} characters")
    return name


def _lookup(
    session: Session, wanted: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """(live tag ids by (group name, tag name), a live group id by group name). When two groups
    share a name, the lowest group id wins, so every caller picks the same tags."""
    groups = sorted({group for group, _ in wanted})
    found: dict[tuple[str, str], str] = {}
    group_ids: dict[str, str] = {}
    rows = session.execute(
        select(T.c.group_name, T.c.name, T.c.tag_id, T.c.group_id)
        .where(T.c.group_name.in_(groups), T.c.deleted.is_(False))
        .order_by(T.c.group_id, T.c.tag_id)
    )
    for group_name, name, tag_id, group_id in rows:
        group_ids.setdefault(group_name, group_id)
        found.setdefault((group_name, name), tag_id)
    return found, group_ids


def tag_ids_for(svc: Services, wanted: list[tuple[str, str]]) -> list[str]:
    """The corp tag ids of (group name, tag name) pairs, in order, creating missing tags in WeCom.

    Known tags are read from corp_tags. Missing ones are added with add_corp_tag (to the group's
    id when we know the group, else by group name, which makes WeCom create the group) and stored
    in a short transaction of their own — so call this before the caller's transaction writes
    anything (on SQLite it would wait for that transaction's write lock). WeCom answering that a
    tag already exists (40071: another worker or an admin made it) or that the group is gone
    (40068) makes us re-read the library and try again."""
    pairs = list(dict.fromkeys((_check_name(g, "group name"), _check_name(n, "tag name")) for g, n in wanted))
    if not pairs:
        return []
    for attempt in range(_ADD_ROUNDS + 1):
        with svc.sessions() as session:
            found, group_ids = _lookup(session, pairs)
        missing: dict[str, list[str]] = {}
        for group_name, name in pairs:
            if (group_name, name) not in found:
                missing.setdefault(group_name, []).append(name)
        if not missing:
            return list(dict.fromkeys(found[pair] for pair in pairs))
        if attempt == _ADD_ROUNDS:
            break
        for group_name, names in missing.items():
            group_id = group_ids.get(group_name)
            try:
                created = add_tags(svc, group_name, names, group_id)
            except WeComError as exc:
                if exc.errcode not in (TAG_EXISTS, INVALID_TAG):
                    raise
                # Read what WeCom has now: the group we know by id, or everything when we do not
                # know the group (its id is not in our copy yet).
                if group_id:
                    sync_groups(svc, [group_id])
                else:
                    sync_corp_tags(svc)
                continue
            with svc.sessions.begin() as session:
                upsert_tags(session, created, svc.clock.now())
    raise LookupError(f"corp tags still missing after {_ADD_ROUNDS} rounds of add_corp_tag: {missing}")

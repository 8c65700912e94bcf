"""Customers and follow relations: upserts the contact handlers use. Each is one statement, so
a handler that runs twice, or two handlers for one customer at once, end in the same rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.store.db import insert_for
from app.store.models import Customer, FollowRelation, RelationStatus


def upsert_customer(
    session: Session,
    external_userid: str,
    now: datetime,
    *,
    name: str | None = None,
    type: int | None = None,
    unionid: str | None = None,
    profile: dict[str, Any] | None = None,
) -> None:
    """Create the customer or update what is given; the profile is merged key by key (a later
    event that knows less does not erase what an earlier one learnt)."""
    existing = session.get(Customer, external_userid)
    if existing is None:
        stmt = insert_for(session)(Customer).values(
            external_userid=external_userid,
            name=name or "",
            type=type or 1,
            unionid=unionid,
            profile={k: v for k, v in (profile or {}).items() if v not in (None, [], "")},
            created_at=now,
            updated_at=now,
        )
        session.execute(stmt.on_conflict_do_nothing(index_elements=[Customer.external_userid]))
        existing = session.get(Customer, external_userid)
        if existing is None:  # pragma: no cover - only a concurrent delete gets here
            return
    if name:
        existing.name = name
    if type:
        existing.type = type
    if unionid:
        existing.unionid = unionid
    if profile:
        merged = dict(existing.profile or {})
        merged.update({k: v for k, v in profile.items() if v not in (None, [], "")})
        existing.profile = merged
    existing.updated_at = now


def upsert_relation(
    session: Session,
    advisor_userid: str,
    external_userid: str,
    now: datetime,
    *,
    dealer_code: str | None = None,
    state: str | None = None,
    tag_ids: list[str] | None = None,
    status: str = RelationStatus.ACTIVE,
) -> FollowRelation:
    """The relation as it is now; (re)activating one clears its end."""
    stmt = insert_for(session)(FollowRelation).values(
        advisor_userid=advisor_userid,
        external_userid=external_userid,
        dealer_code=dealer_code,
        status=status,
        state=state,
        tag_ids=tag_ids or [],
        added_at=now,
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=["advisor_userid", "external_userid"]))
    relation = session.scalars(
        select(FollowRelation).where(
            FollowRelation.advisor_userid == advisor_userid, FollowRelation.external_userid == external_userid
        )
    ).one()
    if status == RelationStatus.ACTIVE and relation.status != RelationStatus.ACTIVE:
        relation.added_at, relation.ended_at, relation.end_reason = now, None, None
    relation.status = status
    if dealer_code:
        relation.dealer_code = dealer_code
    if state:
        relation.state = state
    if tag_ids is not None:
        relation.tag_ids = list(tag_ids)
    return relation


def end_relation(
    session: Session, advisor_userid: str, external_userid: str, status: str, reason: str, now: datetime
) -> bool:
    """Mark an active relation ended; False when there was none (unknown, or already ended)."""
    result = session.execute(
        update(FollowRelation)
        .where(
            FollowRelation.advisor_userid == advisor_userid,
            FollowRelation.external_userid == external_userid,
            FollowRelation.status == RelationStatus.ACTIVE,
        )
        .values(status=status, ended_at=now, end_reason=reason)
    )
    return result.rowcount > 0


def active_relations(session: Session, external_userid: str) -> list[FollowRelation]:
    return list(
        session.scalars(
            select(FollowRelation)
            .where(
                FollowRelation.external_userid == external_userid,
                FollowRelation.status == RelationStatus.ACTIVE,
            )
            .order_by(FollowRelation.added_at)
        )
    )

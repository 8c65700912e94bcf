"""Creating and reading campaigns, with scope enforcement.

Who may do what (``actor_dealer`` None is headquarters):

- HQ may scope a campaign to the whole brand or to any dealer, and name any dealer in the filter.
- A dealer (its API token, or ``scrm campaign create --dealer CODE``) creates campaigns scoped to
  itself only: a scope or a ``dealer(…)`` atom naming another dealer is refused (``ScopeError``,
  HTTP 403); its audience is always restricted to relations of its own dealer. It sees the
  campaigns scoped to it (``visible``) and cancels only the ones it created.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.campaigns import audience, states
from app.campaigns.audience import AudienceCounts, AudienceError
from app.campaigns.model import CampaignSpec
from app.store.campaign_models import Campaign, CampaignTransition
from app.store.models import Dealer

PAST_GRACE = timedelta(minutes=5)  # a send_at this far in the past still means "now"


class ScopeError(PermissionError):
    """A dealer tried to reach beyond its own dealer (HTTP 403)."""


class SpecError(ValueError):
    """The spec cannot be used: unknown names in the filter, a bad scope or schedule (HTTP 400)."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column


@dataclass
class Plan:
    """What a create would store: the effective scope, send time and the dry-run figures."""

    spec: CampaignSpec
    scope_dealer: str | None
    send_at: datetime
    counts: AudienceCounts


def actor_of(actor_dealer: str | None) -> str:
    return "hq" if actor_dealer is None else f"dealer:{actor_dealer}"


def plan(
    session: Session,
    spec: CampaignSpec,
    *,
    actor_dealer: str | None,
    now: datetime,
    band_floors: tuple[float, float] = audience.DEFAULT_BAND_FLOORS,
) -> Plan:
    """Check scope and schedule, resolve the filter and count the audience (nothing is written)."""
    flt = spec.filter
    wanted = spec.scope.dealer.strip().upper() if spec.scope.dealer else None
    if actor_dealer is not None:
        if wanted not in (None, actor_dealer):
            raise ScopeError(f"a dealer token of {actor_dealer} cannot scope a campaign to {wanted}")
        others = sorted(flt.dealers() - {actor_dealer})
        if others:
            raise ScopeError(f"a dealer token of {actor_dealer} cannot target dealer {', '.join(others)}")
        scope = actor_dealer
    else:
        scope = wanted
    if scope is not None and session.get(Dealer, scope) is None:
        raise SpecError(f"scope.dealer: unknown dealer {scope!r}")
    send_at = spec.schedule.send_at or now
    if send_at < now - PAST_GRACE:
        raise SpecError(f"schedule.send_at: {send_at.isoformat()} is in the past")
    send_at = max(send_at, now)
    try:
        counts = audience.count_audience(session, flt, scope, band_floors)
    except AudienceError as exc:
        raise SpecError(str(exc), exc.column) from exc
    return Plan(spec, scope, send_at, counts)


def create(
    session: Session, made: Plan, *, actor_dealer: str | None, now: datetime, draft: bool = False
) -> Campaign:
    """Store a planned campaign (state ``draft`` or ``scheduled``); the caller commits."""
    body = made.spec.to_json()
    body["scope"] = {"dealer": made.scope_dealer}
    state = states.DRAFT if draft else states.SCHEDULED
    campaign = Campaign(
        name=made.spec.name,
        spec=body,
        scope_dealer=made.scope_dealer,
        state=state,
        created_by=actor_of(actor_dealer),
        send_at=made.send_at,
        audience={**made.counts.to_json(), "counted_at": now.isoformat()},
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    session.add(
        CampaignTransition(
            campaign_id=campaign.id, from_state=None, to_state=state, actor=actor_of(actor_dealer), at=now
        )
    )
    session.flush()
    return campaign


def visible(campaign: Campaign | None, actor_dealer: str | None) -> bool:
    """HQ sees every campaign; a dealer the ones scoped to it."""
    return campaign is not None and (actor_dealer is None or campaign.scope_dealer == actor_dealer)


def may_change(campaign: Campaign, actor_dealer: str | None) -> bool:
    """HQ may cancel or schedule any campaign; a dealer only those it created."""
    return actor_dealer is None or campaign.created_by == actor_of(actor_dealer)


def history(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(CampaignTransition)
        .where(CampaignTransition.campaign_id == campaign_id)
        .order_by(CampaignTransition.id)
    )
    return [
        {
            "from": row.from_state,
            "to": row.to_state,
            "by": row.actor,
            "reason": row.reason,
            "at": row.at.isoformat(),
        }
        for row in rows
    ]


def to_json(session: Session, campaign: Campaign) -> dict[str, Any]:
    """What ``GET /api/campaigns/<id>`` answers. ``audience`` holds the dry-run figures taken at
    creation (until the submission step records real ones)."""
    figures = campaign.audience or {}
    return {
        "id": campaign.id,
        "name": campaign.name,
        "state": campaign.state,
        "scope": {"dealer": campaign.scope_dealer},
        "created_by": campaign.created_by,
        "send_at": campaign.send_at.isoformat(),
        "created_at": campaign.created_at.isoformat(),
        "updated_at": campaign.updated_at.isoformat(),
        "content": campaign.spec.get("content"),
        "filter": campaign.spec.get("audience"),
        "audience": {
            "total": figures.get("total", 0),
            "by_dealer": figures.get("by_dealer", {}),
            "by_advisor": figures.get("by_advisor", {}),
            "counted_at": figures.get("counted_at"),
            "source": "dry_run",
        },
        "history": history(session, campaign.id),
    }

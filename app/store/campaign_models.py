"""Models of tagged mass sends (issue #5). Imported by app/store/models.py so they are part of
Base.metadata.

- ``campaigns``: one campaign: its validated spec (content, audience filter, scope, schedule), the
  dealer it is scoped to (NULL: the whole brand), who made it (``hq`` or ``dealer:<code>``), its
  state (app/campaigns/states.py) and the audience figures of its dry run. ``ix_campaigns_due
  (state, send_at)`` is what a scheduler asks: scheduled campaigns due by now.
- ``campaign_transitions``: every state change (from, to, who, why, when), written in the
  transaction that made it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.store.models import Base
from app.store.types import BigId


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]]
    scope_dealer: Mapped[str | None] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(String(24))
    created_by: Mapped[str] = mapped_column(String(64))  # hq | dealer:<code>
    send_at: Mapped[datetime]
    audience: Mapped[dict[str, Any] | None]  # {total, by_dealer, by_advisor, counted_at}
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_campaigns_due", "state", "send_at"),)


class CampaignTransition(Base):
    __tablename__ = "campaign_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(24))  # None: created
    to_state: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[datetime]

"""Models of the lead intent score and tracked links (issue #4). Imported by app/store/models.py
so they are part of Base.metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.store.models import Base


class CustomerIntent(Base):
    """A customer's lead intent score (线索浓度) as last computed from the interaction log. The
    log is the truth (``app.insight.intent.recompute`` rebuilds this row from it); the row keeps
    the band a change is measured against. ``counts`` are the per-kind counts it was made from."""

    __tablename__ = "customer_intent"

    external_userid: Mapped[str] = mapped_column(String(64), primary_key=True)
    score: Mapped[float] = mapped_column(Float)  # 0-100
    band: Mapped[str] = mapped_column(String(8))  # low, medium, high
    counts: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
    band_changed_at: Mapped[datetime | None]


class TrackedLink(Base):
    """A short redirect (``/r/<token>``) standing for one URL sent to one customer, so an open
    is recorded as ``link_opened``. ``link_key`` (a hash of url, customer, advisor, card, step)
    makes sending the same link again reuse its token."""

    __tablename__ = "tracked_links"

    token: Mapped[str] = mapped_column(String(16), primary_key=True)
    link_key: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    external_userid: Mapped[str] = mapped_column(String(64), index=True)
    advisor_userid: Mapped[str | None] = mapped_column(String(64))
    card_id: Mapped[str | None] = mapped_column(String(64))
    step_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]

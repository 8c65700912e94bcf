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

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
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


# -- submission and results (issue #5, steps 2-3) ----------------------------------------------------
#
# - ``campaign_recipients``: the frozen audience, one row per customer, written once when the
#   submission starts; its ``status`` follows the customer: targeted → submitted (or failed: in
#   WeCom's fail_list) → sent | not_sent | not_friend | over_limit, or cancelled.
# - ``campaign_batches``: one add_msg_template call: an advisor's customers, at most
#   CAMPAIGN_BATCH_SIZE of them; pending → submitting (claimed under a lease) → submitted (msgid,
#   fail_list) or failed / cancelled. ``task_state`` is the advisor's WeCom task once submitted:
#   unsent → sent | expired | cancelled.

RECIPIENT_STATUSES = (
    "targeted", "submitted", "sent", "not_sent", "not_friend", "over_limit", "failed", "cancelled",
)  # fmt: skip


class CampaignRecipient(Base):
    __tablename__ = "campaign_recipients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    external_userid: Mapped[str] = mapped_column(String(64))
    advisor_userid: Mapped[str] = mapped_column(String(64))
    dealer_code: Mapped[str | None] = mapped_column(String(32))
    batch_no: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(255))
    msgid: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("campaign_id", "external_userid", name="uq_campaign_recipients"),
        Index("ix_campaign_recipients_batch", "campaign_id", "advisor_userid", "batch_no"),
    )


class CampaignBatch(Base):
    __tablename__ = "campaign_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    advisor_userid: Mapped[str] = mapped_column(String(64))
    batch_no: Mapped[int]
    size: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # pending|submitting|submitted|failed|cancelled
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(String(255))
    msgid: Mapped[str | None] = mapped_column(String(64))
    fail_list: Mapped[list[str] | None]
    submitted_at: Mapped[datetime | None]
    task_state: Mapped[str | None] = mapped_column(String(16))  # unsent|sent|expired|cancelled
    results_at: Mapped[datetime | None]
    reminded_count: Mapped[int] = mapped_column(default=0)
    last_reminded_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("campaign_id", "advisor_userid", "batch_no", name="uq_campaign_batches"),
        Index("ix_campaign_batches_campaign", "campaign_id", "status"),
    )

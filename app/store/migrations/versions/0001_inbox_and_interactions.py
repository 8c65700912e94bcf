"""inbox of callbacks and the interaction log

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from app.store.types import BigId, JsonDoc, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("dedup_key", sa.String(191), nullable=False, unique=True),
        sa.Column("event_type", sa.String(96), nullable=False),
        sa.Column("corp_id", sa.String(64), nullable=False),
        sa.Column("event_time", sa.BigInteger, nullable=False),
        sa.Column("plaintext", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.String(255)),
        sa.Column("deliveries", sa.Integer, nullable=False, server_default="1"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("job_generation", sa.Integer, nullable=False, server_default="1"),
        sa.Column("lease_until", UTCDateTime()),
        sa.Column("last_error", sa.Text),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
    )
    op.create_index("ix_inbox_events_status_updated", "inbox_events", ["status", "updated_at"])

    if op.get_bind().dialect.name == "postgresql":
        # The id of the writing transaction, 64-bit and wraparound-free (PostgreSQL 13+).
        tx_default = sa.text("(pg_current_xact_id()::text)::bigint")
    else:
        tx_default = sa.text("0")
    op.create_table(
        "interactions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tx_id", sa.BigInteger, nullable=False, server_default=tx_default),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("advisor_userid", sa.String(64)),
        sa.Column("external_userid", sa.String(64)),
        sa.Column("dealer_code", sa.String(32)),
        sa.Column("payload", JsonDoc, nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("source_event_id", BigId, sa.ForeignKey("inbox_events.id")),
        sa.Column("dedup_key", sa.String(191), nullable=False, unique=True),
    )
    op.create_index("ix_interactions_feed", "interactions", ["tx_id", "id"])
    op.create_index("ix_interactions_customer", "interactions", ["external_userid", "occurred_at"])
    op.create_index("ix_interactions_advisor", "interactions", ["advisor_userid", "occurred_at"])


def downgrade() -> None:
    op.drop_table("interactions")
    op.drop_table("inbox_events")

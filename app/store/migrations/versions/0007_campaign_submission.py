"""campaign submission (issue #5): campaign_recipients (the frozen audience and each customer's
outcome) and campaign_batches (one add_msg_template call each: claim, msgid, fail_list, the
advisor's task, reminders)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from app.store.types import BigId, JsonDoc, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_recipients",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("campaign_id", BigId, nullable=False),
        sa.Column("external_userid", sa.String(length=64), nullable=False),
        sa.Column("advisor_userid", sa.String(length=64), nullable=False),
        sa.Column("dealer_code", sa.String(length=32), nullable=True),
        sa.Column("batch_no", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("msgid", sa.String(length=64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "external_userid", name="uq_campaign_recipients"),
    )
    op.create_index(
        "ix_campaign_recipients_batch", "campaign_recipients", ["campaign_id", "advisor_userid", "batch_no"]
    )
    op.create_table(
        "campaign_batches",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("campaign_id", BigId, nullable=False),
        sa.Column("advisor_userid", sa.String(length=64), nullable=False),
        sa.Column("batch_no", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.Column("msgid", sa.String(length=64), nullable=True),
        sa.Column("fail_list", JsonDoc, nullable=True),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("task_state", sa.String(length=16), nullable=True),
        sa.Column("results_at", UTCDateTime(), nullable=True),
        sa.Column("reminded_count", sa.Integer(), nullable=False),
        sa.Column("last_reminded_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "advisor_userid", "batch_no", name="uq_campaign_batches"),
    )
    op.create_index("ix_campaign_batches_campaign", "campaign_batches", ["campaign_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_campaign_batches_campaign", table_name="campaign_batches")
    op.drop_table("campaign_batches")
    op.drop_index("ix_campaign_recipients_batch", table_name="campaign_recipients")
    op.drop_table("campaign_recipients")

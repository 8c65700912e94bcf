"""campaigns (issue #5): campaigns (spec, scope, state, schedule, dry-run audience) and
campaign_transitions (the state history)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from app.store.types import BigId, JsonDoc, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("spec", JsonDoc, nullable=False),
        sa.Column("scope_dealer", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("send_at", UTCDateTime(), nullable=False),
        sa.Column("audience", JsonDoc, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_campaigns_scope_dealer", "campaigns", ["scope_dealer"])
    op.create_index("ix_campaigns_due", "campaigns", ["state", "send_at"])
    op.create_table(
        "campaign_transitions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("campaign_id", BigId, nullable=False),
        sa.Column("from_state", sa.String(length=24), nullable=True),
        sa.Column("to_state", sa.String(length=24), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_campaign_transitions_campaign_id", "campaign_transitions", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_campaign_transitions_campaign_id", table_name="campaign_transitions")
    op.drop_table("campaign_transitions")
    op.drop_index("ix_campaigns_due", table_name="campaigns")
    op.drop_index("ix_campaigns_scope_dealer", table_name="campaigns")
    op.drop_table("campaigns")

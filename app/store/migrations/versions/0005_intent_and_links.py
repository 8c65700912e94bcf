"""intent and links (issue #4): customer_intent (the lead intent score per customer) and
tracked_links (the /r/<token> redirects)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from app.store.types import JsonDoc, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_intent",
        sa.Column("external_userid", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("band", sa.String(length=8), nullable=False),
        sa.Column("counts", JsonDoc, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("band_changed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("external_userid"),
    )
    op.create_table(
        "tracked_links",
        sa.Column("token", sa.String(length=16), nullable=False),
        sa.Column("link_key", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("external_userid", sa.String(length=64), nullable=False),
        sa.Column("advisor_userid", sa.String(length=64), nullable=True),
        sa.Column("card_id", sa.String(length=64), nullable=True),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token"),
        sa.UniqueConstraint("link_key"),
    )
    op.create_index("ix_tracked_links_external_userid", "tracked_links", ["external_userid"])


def downgrade() -> None:
    op.drop_index("ix_tracked_links_external_userid", table_name="tracked_links")
    op.drop_table("tracked_links")
    op.drop_table("customer_intent")

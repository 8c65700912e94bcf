"""SOP cards: every stored version of a card (by content hash) and each card's current version

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from app.store.types import BigId, JsonDoc, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sop_card_versions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("card_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=128), nullable=False),
        sa.Column("body", JsonDoc, nullable=False),
        sa.Column("source_path", sa.String(length=255), nullable=False),
        sa.Column("loaded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("card_id", "content_hash", name="uq_sop_card_versions_hash"),
        sa.UniqueConstraint("card_id", "version", name="uq_sop_card_versions_version"),
    )
    op.create_table(
        "sop_cards",
        sa.Column("card_id", sa.String(length=64), nullable=False),
        sa.Column("current_version_id", BigId, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["current_version_id"], ["sop_card_versions.id"]),
        sa.PrimaryKeyConstraint("card_id"),
    )


def downgrade() -> None:
    op.drop_table("sop_cards")
    op.drop_table("sop_card_versions")

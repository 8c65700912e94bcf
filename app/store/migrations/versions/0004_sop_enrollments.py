"""sop enrollments (issue #4): enrollments pinned to a card version, step runs (each step once),
feed consumer cursors

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from app.store.types import BigId, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sop_enrollments",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("card_id", sa.String(length=64), nullable=False),
        sa.Column("card_version_id", BigId, nullable=False),
        sa.Column("external_userid", sa.String(length=64), nullable=False),
        sa.Column("advisor_userid", sa.String(length=64), nullable=False),
        sa.Column("dealer_code", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("exit_reason", sa.String(length=64), nullable=True),
        sa.Column("trigger_kind", sa.String(length=32), nullable=False),
        sa.Column("trigger_interaction_id", sa.BigInteger(), nullable=True),
        sa.Column("enrolled_at", UTCDateTime(), nullable=False),
        sa.Column("next_step", sa.Integer(), nullable=False),
        sa.Column("next_due_at", UTCDateTime(), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["card_version_id"], ["sop_card_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("card_id", "external_userid", name="uq_sop_enrollments_card_customer"),
    )
    # Only live enrollments (next_due_at is NULL once finished), in due order, covering the
    # sweep's columns: the sweep reads the due entries of this index and nothing else.
    op.create_index(
        "ix_sop_enrollments_due",
        "sop_enrollments",
        ["next_due_at", "id", "next_step"],
        postgresql_where=sa.text("next_due_at IS NOT NULL"),
        sqlite_where=sa.text("next_due_at IS NOT NULL"),
    )
    op.create_index("ix_sop_enrollments_customer", "sop_enrollments", ["external_userid", "status"])

    op.create_table(
        "sop_step_runs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("enrollment_id", BigId, nullable=False),
        sa.Column("card_id", sa.String(length=64), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ran_at", UTCDateTime(), nullable=False),
        sa.Column("reminder_msgid", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["enrollment_id"], ["sop_enrollments.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("enrollment_id", "step_index", name="uq_sop_step_runs_step"),
    )
    op.create_index("ix_sop_step_runs_card", "sop_step_runs", ["card_id", "step_index"])

    op.create_table(
        "consumer_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.String(length=64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("consumer_cursors")
    op.drop_index("ix_sop_step_runs_card", table_name="sop_step_runs")
    op.drop_table("sop_step_runs")
    op.drop_index("ix_sop_enrollments_customer", table_name="sop_enrollments")
    op.drop_index("ix_sop_enrollments_due", table_name="sop_enrollments")
    op.drop_table("sop_enrollments")

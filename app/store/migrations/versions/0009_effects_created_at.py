"""effects.created_at index: an advisor decision kept in the ledger whose assignment row is not
written yet counts towards the advisor's load (app/intake/assign.py ``loads``), so every load
read scans the ledger's last ``pending_window`` (about an hour)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_effects_created_at", "effects", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_effects_created_at", table_name="effects")

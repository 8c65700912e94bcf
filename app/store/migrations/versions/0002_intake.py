"""intake: roster, corp tag library, customers and follow relations, leads, assignments,
contact ways and the effects ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from app.store.types import BigId, JsonDoc, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contact_ways",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("advisor_userid", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("config_id", sa.String(length=64), nullable=False),
        sa.Column("qr_code", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("advisor_userid", "state", name="uq_contact_ways_advisor_state"),
    )
    op.create_table(
        "corp_tags",
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("group_name", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tag_id"),
    )
    with op.batch_alter_table("corp_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_corp_tags_group_id"), ["group_id"], unique=False)
        batch_op.create_index("ix_corp_tags_group_name", ["group_name", "name"], unique=False)

    op.create_table(
        "customers",
        sa.Column("external_userid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("unionid", sa.String(length=64), nullable=True),
        sa.Column("profile", JsonDoc, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("external_userid"),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customers_unionid"), ["unionid"], unique=False)

    op.create_table(
        "dealers",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("city", sa.String(length=64), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("models", JsonDoc, nullable=False),
        sa.Column("territory", JsonDoc, nullable=False),
        sa.Column("manager_userid", sa.String(length=64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_table(
        "effects",
        sa.Column("key", sa.String(length=191), nullable=False),
        sa.Column("result", JsonDoc, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "follow_relations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("advisor_userid", sa.String(length=64), nullable=False),
        sa.Column("external_userid", sa.String(length=64), nullable=False),
        sa.Column("dealer_code", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=True),
        sa.Column("tag_ids", JsonDoc, nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("advisor_userid", "external_userid", name="uq_follow_relations_pair"),
    )
    with op.batch_alter_table("follow_relations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_follow_relations_advisor_status", ["advisor_userid", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_follow_relations_external_userid"), ["external_userid"], unique=False
        )

    op.create_table(
        "leads",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("lead_key", sa.String(length=191), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_ref", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=True),
        sa.Column("phone_masked", sa.String(length=16), nullable=True),
        sa.Column("unionid", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=32), nullable=True),
        sa.Column("city", sa.String(length=64), nullable=True),
        sa.Column("dealer_code", sa.String(length=32), nullable=True),
        sa.Column("budget", sa.String(length=32), nullable=True),
        sa.Column("intent", sa.Float(), nullable=True),
        sa.Column("campaign", sa.String(length=32), nullable=True),
        sa.Column("link_token", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("advisor_userid", sa.String(length=64), nullable=True),
        sa.Column("external_userid", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("linked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lead_key"),
        sa.UniqueConstraint("link_token"),
    )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_leads_advisor_userid"), ["advisor_userid"], unique=False)
        batch_op.create_index(batch_op.f("ix_leads_external_userid"), ["external_userid"], unique=False)
        batch_op.create_index(batch_op.f("ix_leads_phone_hash"), ["phone_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_leads_unionid"), ["unionid"], unique=False)

    op.create_table(
        "advisors",
        sa.Column("userid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("dealer_code", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("capacity_per_day", sa.Integer(), nullable=False),
        sa.Column("max_open_leads", sa.Integer(), nullable=False),
        sa.Column("models", JsonDoc, nullable=False),
        sa.Column("languages", JsonDoc, nullable=False),
        sa.Column("segments", JsonDoc, nullable=False),
        sa.Column("personas", JsonDoc, nullable=False),
        sa.Column("seniority", sa.Integer(), nullable=False),
        sa.Column("acceptance_rate", sa.Float(), nullable=True),
        sa.Column("median_first_response_s", sa.Float(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dealer_code"],
            ["dealers.code"],
        ),
        sa.PrimaryKeyConstraint("userid"),
    )
    with op.batch_alter_table("advisors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_advisors_dealer_code"), ["dealer_code"], unique=False)

    op.create_table(
        "assignments",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("dedup_key", sa.String(length=191), nullable=False),
        sa.Column("external_userid", sa.String(length=64), nullable=True),
        sa.Column("lead_id", BigId, nullable=True),
        sa.Column("advisor_userid", sa.String(length=64), nullable=True),
        sa.Column("dealer_code", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("explanation", JsonDoc, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_assignments_advisor_created", ["advisor_userid", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_assignments_external_userid"), ["external_userid"], unique=False)
        batch_op.create_index(batch_op.f("ix_assignments_lead_id"), ["lead_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assignments_lead_id"))
        batch_op.drop_index(batch_op.f("ix_assignments_external_userid"))
        batch_op.drop_index("ix_assignments_advisor_created")

    op.drop_table("assignments")
    with op.batch_alter_table("advisors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_advisors_dealer_code"))

    op.drop_table("advisors")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leads_unionid"))
        batch_op.drop_index(batch_op.f("ix_leads_phone_hash"))
        batch_op.drop_index(batch_op.f("ix_leads_external_userid"))
        batch_op.drop_index(batch_op.f("ix_leads_advisor_userid"))

    op.drop_table("leads")
    with op.batch_alter_table("follow_relations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_follow_relations_external_userid"))
        batch_op.drop_index("ix_follow_relations_advisor_status")

    op.drop_table("follow_relations")
    op.drop_table("effects")
    op.drop_table("dealers")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customers_unionid"))

    op.drop_table("customers")
    with op.batch_alter_table("corp_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_corp_tags_group_name")
        batch_op.drop_index(batch_op.f("ix_corp_tags_group_id"))

    op.drop_table("corp_tags")
    op.drop_table("contact_ways")

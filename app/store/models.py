"""SQLAlchemy 2.0 typed models. Schema changes go through Alembic (app/store/migrations)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.store.types import BigId, JsonDoc, UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JsonDoc,
        list[str]: JsonDoc,
    }


class InboxStatus:
    """Life of one stored callback. Terminal: done, ignored, failed (until retried by hand)."""

    RECEIVED = "received"  # stored; a job was (or will be, by the sweeper) enqueued
    PROCESSING = "processing"  # a worker holds it until lease_until
    RETRYING = "retrying"  # the last attempt failed; RQ will run it again
    DONE = "done"
    IGNORED = "ignored"  # a known event type we do not act on; status_reason says why
    FAILED = "failed"  # retries used up; `scrm inbox failed` / `scrm inbox retry`

    ALL = (RECEIVED, PROCESSING, RETRYING, DONE, IGNORED, FAILED)
    PENDING = (RECEIVED, PROCESSING, RETRYING)


class InboxEvent(Base):
    """One decrypted callback, stored before WeCom gets its answer. The dedup key collapses
    WeCom's retries of one event into one row (``deliveries`` counts them)."""

    __tablename__ = "inbox_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    dedup_key: Mapped[str] = mapped_column(String(191), unique=True)
    event_type: Mapped[str] = mapped_column(String(96))
    corp_id: Mapped[str] = mapped_column(String(64))
    event_time: Mapped[int] = mapped_column(BigInteger)
    plaintext: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=InboxStatus.RECEIVED)
    status_reason: Mapped[str | None] = mapped_column(String(255))
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    job_generation: Mapped[int] = mapped_column(Integer, default=1)
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_inbox_events_status_updated", "status", "updated_at"),)


class Interaction(Base):
    """Append-only log of advisor/customer interactions: the shared store the brand's CDP reads.

    ``dedup_key`` makes a handler's write idempotent (a job that runs twice writes once).
    ``tx_id`` is the writing transaction's id on PostgreSQL (0 on SQLite, which has one writer);
    the feed orders by (tx_id, id) and stops before the oldest transaction open in this database,
    so a reader never skips a row that commits late.
    """

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tx_id: Mapped[int] = mapped_column(BigInteger, server_default=FetchedValue())
    kind: Mapped[str] = mapped_column(String(32))
    advisor_userid: Mapped[str | None] = mapped_column(String(64))
    external_userid: Mapped[str | None] = mapped_column(String(64))
    dealer_code: Mapped[str | None] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    source_event_id: Mapped[int | None] = mapped_column(ForeignKey("inbox_events.id"))
    dedup_key: Mapped[str] = mapped_column(String(191), unique=True)

    __table_args__ = (
        Index("ix_interactions_feed", "tx_id", "id"),
        Index("ix_interactions_customer", "external_userid", "occurred_at"),
        Index("ix_interactions_advisor", "advisor_userid", "occurred_at"),
    )


# -- intake: roster, tag library, customers, leads, assignments ---------------------------------


class Dealer(Base):
    """A dealer (4S store). ``models`` are the car models it sells; ``territory`` the cities it
    serves besides its own; the manager gets churn alerts through the bot app."""

    __tablename__ = "dealers"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    region: Mapped[str] = mapped_column(String(64))
    city: Mapped[str] = mapped_column(String(64))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    models: Mapped[list[str]] = mapped_column(JsonDoc)
    territory: Mapped[list[str]] = mapped_column(JsonDoc)
    manager_userid: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class Advisor(Base):
    """A dealer sales advisor (a WeCom member) and the tag profile matching scores against."""

    __tablename__ = "advisors"

    userid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    dealer_code: Mapped[str] = mapped_column(ForeignKey("dealers.code"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    capacity_per_day: Mapped[int] = mapped_column(Integer)
    max_open_leads: Mapped[int] = mapped_column(Integer)
    models: Mapped[list[str]] = mapped_column(JsonDoc)
    languages: Mapped[list[str]] = mapped_column(JsonDoc)
    segments: Mapped[list[str]] = mapped_column(JsonDoc)
    personas: Mapped[list[str]] = mapped_column(JsonDoc)
    seniority: Mapped[int] = mapped_column(Integer, default=0)
    acceptance_rate: Mapped[float | None] = mapped_column(Float)
    median_first_response_s: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime]


class CorpTag(Base):
    """The corp tag library (企业客户标签) as last synced from WeCom; deleted tags are kept,
    flagged, so old interactions still resolve their names."""

    __tablename__ = "corp_tags"

    tag_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(64), index=True)
    group_name: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    synced_at: Mapped[datetime]

    __table_args__ = (Index("ix_corp_tags_group_name", "group_name", "name"),)


class Customer(Base):
    """An external contact (外部联系人). ``profile`` is the customer tag profile matching uses
    (model, city, dealer, languages, segment, persona, intent, channel, campaign)."""

    __tablename__ = "customers"

    external_userid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    type: Mapped[int] = mapped_column(Integer, default=1)  # 1 WeChat user, 2 WeCom user
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    profile: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RelationStatus:
    ACTIVE = "active"
    LOST = "lost"  # the customer deleted the advisor (del_follow_user)
    REMOVED = "removed"  # the advisor deleted the customer (del_external_contact)
    TRANSFERRED = "transferred"  # handed over to another advisor


class FollowRelation(Base):
    """Advisor ↔ customer (跟进关系), with the state it was added through and its corp tags."""

    __tablename__ = "follow_relations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    advisor_userid: Mapped[str] = mapped_column(String(64))
    external_userid: Mapped[str] = mapped_column(String(64), index=True)
    dealer_code: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=RelationStatus.ACTIVE)
    state: Mapped[str | None] = mapped_column(String(32))
    tag_ids: Mapped[list[str]] = mapped_column(JsonDoc)
    added_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("advisor_userid", "external_userid", name="uq_follow_relations_pair"),
        Index("ix_follow_relations_advisor_status", "advisor_userid", "status"),
    )


class LeadStatus:
    NEW = "new"  # stored, not matched yet
    ASSIGNED = "assigned"  # an advisor has it; waiting for the customer to add them
    UNASSIGNED = "unassigned"  # no eligible advisor (reason in the assignment)
    LINKED = "linked"  # the customer added the advisor on WeCom


class Lead(Base):
    """An imported lead (线索). Phone numbers are stored only as a keyed hash and a masked form."""

    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lead_key: Mapped[str] = mapped_column(String(191), unique=True)  # what makes a re-import a no-op
    source: Mapped[str] = mapped_column(String(32))
    external_ref: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64), default="")
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    phone_masked: Mapped[str | None] = mapped_column(String(16))
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    model: Mapped[str | None] = mapped_column(String(32))
    city: Mapped[str | None] = mapped_column(String(64))
    dealer_code: Mapped[str | None] = mapped_column(String(32))
    budget: Mapped[str | None] = mapped_column(String(32))
    intent: Mapped[float | None] = mapped_column(Float)
    campaign: Mapped[str | None] = mapped_column(String(32))
    link_token: Mapped[str] = mapped_column(String(16), unique=True)  # in the state "ld.<token>"
    status: Mapped[str] = mapped_column(String(16), default=LeadStatus.NEW)
    advisor_userid: Mapped[str | None] = mapped_column(String(64), index=True)
    external_userid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(index=True)  # the lead sweep scans a window of it
    updated_at: Mapped[datetime]
    linked_at: Mapped[datetime | None]


class Assignment(Base):
    """One matching decision: who got the customer or lead, why (the engine's explanation), and
    what became of it. Today's rows per advisor are the load the engine balances."""

    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(191), unique=True)
    external_userid: Mapped[str | None] = mapped_column(String(64), index=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    advisor_userid: Mapped[str | None] = mapped_column(String(64))
    dealer_code: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(32))  # shared_code, lead, transfer_retry, contact_way …
    status: Mapped[str] = mapped_column(String(16))  # kept, transferring, transferred, failed, unassigned
    score: Mapped[float | None] = mapped_column(Float)
    explanation: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_assignments_advisor_created", "advisor_userid", "created_at"),)


class ContactWay(Base):
    """A contact-way QR code (渠道活码) we created for one advisor and state; made once, reused."""

    __tablename__ = "contact_ways"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    advisor_userid: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    config_id: Mapped[str] = mapped_column(String(64))
    qr_code: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("advisor_userid", "state", name="uq_contact_ways_advisor_state"),)


class Effect(Base):
    """Ledger of side effects on WeCom (a welcome sent, a transfer started, a card sent …) and of
    decisions that must not change on a retry (which advisor was chosen). A job that runs again
    finds its key here and does not act twice."""

    __tablename__ = "effects"

    key: Mapped[str] = mapped_column(String(191), primary_key=True)
    result: Mapped[dict[str, Any]]
    # Indexed: today's advisor decisions not yet recorded count as load (app/intake/assign.py).
    created_at: Mapped[datetime] = mapped_column(index=True)



# -- SOP cards ------------------------------------------------------------------------------------


class SopCardVersion(Base):
    """One stored version of an SOP card: the validated card (``body``) and its content hash.
    Versions are never changed or removed; an enrollment pins the version it started with
    (``sop_card_versions.id``), so editing a card only affects new enrollments."""

    __tablename__ = "sop_card_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    card_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, … per card
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical JSON of body
    title: Mapped[str] = mapped_column(String(128))
    body: Mapped[dict[str, Any]]
    source_path: Mapped[str] = mapped_column(String(255))
    loaded_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("card_id", "content_hash", name="uq_sop_card_versions_hash"),
        UniqueConstraint("card_id", "version", name="uq_sop_card_versions_version"),
    )


class SopCard(Base):
    """Each card's current version: the one new enrollments get. A card edited back to an earlier
    text points at that earlier version again (no new row: versions are unique by content)."""

    __tablename__ = "sop_cards"

    card_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    current_version_id: Mapped[int] = mapped_column(ForeignKey("sop_card_versions.id"))
    updated_at: Mapped[datetime]


# Models kept in modules of their own; imported here so every table is in Base.metadata.
from app.store import campaign_models, insight_models, sop_models  # noqa: E402,F401

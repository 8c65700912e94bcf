"""SQLAlchemy 2.0 typed models. Schema changes go through Alembic (app/store/migrations)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, FetchedValue, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.store.types import BigId, JsonDoc, UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JsonDoc}


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
    the feed orders by (tx_id, id) and stops before the oldest open transaction, so a reader
    never skips a row that commits late.
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

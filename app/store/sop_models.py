"""Models of SOP enrollment and scheduling (issue #4). Imported by app/store/models.py so they
are part of Base.metadata.

- ``sop_enrollments``: one customer in one card, pinned to the card version they started with.
  ``UNIQUE(card_id, external_userid)`` makes enrollment once per card per customer, whatever
  retries or concurrent consumers do. ``next_due_at`` is the due time of ``next_step`` while the
  enrollment is active and NULL once it is finished (completed or exited), so the partial index
  ``ix_sop_enrollments_due (next_due_at, id, next_step) WHERE next_due_at IS NOT NULL`` holds only
  live enrollments, in due order, and covers the sweep's query: ``next_due_at <= now ORDER BY
  next_due_at LIMIT n`` reads n index entries and no table rows, however many enrollments exist.
- ``sop_step_runs``: one row per step that ran (or was skipped). ``UNIQUE(enrollment_id,
  step_index)`` is the claim that makes each step run once: it is inserted in the transaction that
  advances the enrollment, so of two runs of one step only one commits.
- ``consumer_cursors``: where a reader of the interaction feed is (the SOP trigger consumer, the
  no_reply scan); the row is also the consumer's lock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.store.models import Base
from app.store.types import BigId


class EnrollmentStatus:
    ACTIVE = "active"
    COMPLETED = "completed"  # the last step ran
    EXITED = "exited"  # ended early: exit_reason says why

    ALL = (ACTIVE, COMPLETED, EXITED)


class SopEnrollment(Base):
    """A customer enrolled in an SOP card (pinned to ``card_version_id``), and the step to run next."""

    __tablename__ = "sop_enrollments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    card_id: Mapped[str] = mapped_column(String(64))
    card_version_id: Mapped[int] = mapped_column(ForeignKey("sop_card_versions.id"))
    external_userid: Mapped[str] = mapped_column(String(64))
    advisor_userid: Mapped[str] = mapped_column(String(64))
    dealer_code: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=EnrollmentStatus.ACTIVE)
    exit_reason: Mapped[str | None] = mapped_column(String(64))
    trigger_kind: Mapped[str] = mapped_column(String(32))  # contact_added, tag_added, … manual
    trigger_interaction_id: Mapped[int | None] = mapped_column(BigInteger)  # the interaction that fired
    enrolled_at: Mapped[datetime]
    next_step: Mapped[int] = mapped_column(Integer, default=0)  # index into the pinned card's steps
    next_due_at: Mapped[datetime | None]  # NULL once finished
    # A run of next_step holds the enrollment until then (its WeCom calls must not run twice at
    # once); ``attempts`` counts runs of next_step, so a step that keeps failing ends the enrollment.
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("card_id", "external_userid", name="uq_sop_enrollments_card_customer"),
        Index(
            "ix_sop_enrollments_due",
            "next_due_at",
            "id",
            "next_step",
            postgresql_where=text("next_due_at IS NOT NULL"),
            sqlite_where=text("next_due_at IS NOT NULL"),
        ),
        Index("ix_sop_enrollments_customer", "external_userid", "status"),
    )


class StepRunStatus:
    DONE = "done"  # reminder sent and actions run
    SKIPPED = "skipped"  # not run: the next step was already due (the system was behind)


class SopStepRun(Base):
    """One step of one enrollment that ran (or was skipped): exactly one row per step."""

    __tablename__ = "sop_step_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("sop_enrollments.id"))
    card_id: Mapped[str] = mapped_column(String(64))  # the enrollment's, for per-card aggregates
    step_index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    ran_at: Mapped[datetime]
    reminder_msgid: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_index", name="uq_sop_step_runs_step"),
        Index("ix_sop_step_runs_card", "card_id", "step_index"),
    )


class ConsumerCursor(Base):
    """A feed reader's position (``Cursor`` text, ``"<tx>.<id>"``, or a scan position)."""

    __tablename__ = "consumer_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]

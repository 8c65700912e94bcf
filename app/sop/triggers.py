"""SOP triggers from the interaction log: the same commit-safe feed the CDP reads.

``consume`` reads the interactions after its cursor (``consumer_cursors`` row ``sop-triggers``)
with ``app.store.interactions.page`` — in commit order on PostgreSQL, so a row that commits late
is never passed — and turns each into enrollments, exits and hand-overs, then moves the cursor,
all in one transaction. The cursor row is updated first, which locks it: two consumers at once
(two workers, or a worker and ``scrm sop run-due``) take turns, and whatever a crashed consumer
did is rolled back with its cursor, so every interaction is acted on once.

Interactions and what they do:

- ``added`` → ``contact_added`` (with the advisor who was added).
- ``lead_linked``, and ``assigned`` / ``lead_imported`` that name a customer → ``lead_assigned``
  (a lead without a WeCom customer has nobody to enroll yet: it fires when it is linked).
- ``tagged`` (payload ``tags``), ``edited`` (payload ``tags``: all tags now) → ``tag_added``.
- ``stage_changed`` {from, to} → ``stage_changed`` to ``to``; and enrollments of cards with
  ``exit.on_stage_change`` whose audience the customer is no longer in exit (``stage_changed``),
  except the card whose own stage action made the change.
- ``intent_changed`` {score, band, previous_band} → ``intent_band`` when the band is new.
- ``churned`` (the customer deleted the advisor) → that advisor's enrollments of the customer
  exit (``customer_left``) when the card's ``exit.on_customer_left`` says so.
- ``deleted`` (the advisor removed the customer) → they exit (``removed``) in any case.
- ``transfer_completed`` {from, to} → they continue with the new advisor.

``no_reply`` cards are not fed by the log but by ``scan_no_reply``: each sweep looks at the next
``limit`` active follow relations (by id, a cursor per card that wraps around) and enrolls those
whose customer has had no interaction except SOP's own for the card's ``days`` (and who were
added before that). One sweep costs at most ``limit`` relations and two index probes for each;
the whole base is covered every ``relations / limit`` sweeps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from app.services import Services
from app.sop import enrollment
from app.sop.enrollment import CurrentCard, TriggerEvent
from app.sop.tagexpr import normalize_tag
from app.store import interactions
from app.store.db import insert_for
from app.store.interactions import Cursor
from app.store.models import FollowRelation, Interaction, RelationStatus
from app.store.sop_models import ConsumerCursor, SopEnrollment

log = logging.getLogger(__name__)

CONSUMER = "sop-triggers"
NO_REPLY_PREFIX = "sop-no-reply:"
C = ConsumerCursor.__table__


@dataclass
class ConsumeReport:
    read: int = 0  # interactions read
    fired: int = 0  # triggers found in them
    enrolled: int = 0
    exited: int = 0
    moved: int = 0
    cursor: str | None = None  # where the consumer is now

    def add(self, other: ConsumeReport) -> None:
        self.read += other.read
        self.fired += other.fired
        self.enrolled += other.enrolled
        self.exited += other.exited
        self.moved += other.moved
        self.cursor = other.cursor or self.cursor

    def __str__(self) -> str:
        return (
            f"read {self.read} interactions, {self.fired} triggers: {self.enrolled} enrolled, "
            f"{self.exited} exited, {self.moved} moved to a new advisor (cursor {self.cursor or '-'})"
        )


# -- cursors --------------------------------------------------------------------------------------



def lock_cursor(session: Session, name: str, now: datetime) -> str | None:
    """The cursor's value, with its row locked until the caller's transaction ends (the first
    write of the transaction: on SQLite it takes the write lock, on PostgreSQL the row lock)."""
    stmt = update(C).where(C.c.name == name).values(updated_at=now).returning(C.c.cursor)
    row = session.execute(stmt).first()
    if row is None:
        session.execute(
            insert_for(session)(C)
            .values(name=name, cursor=None, updated_at=now)
            .on_conflict_do_nothing(index_elements=[C.c.name])
        )
        row = session.execute(stmt).first()
    return row[0] if row is not None else None


def set_cursor(session: Session, name: str, value: str | None, now: datetime) -> None:
    session.execute(update(C).where(C.c.name == name).values(cursor=value, updated_at=now))


def read_cursor(session: Session, name: str) -> str | None:
    return session.scalar(select(C.c.cursor).where(C.c.name == name))


# -- interactions → triggers ------------------------------------------------------------------------


def _tags(payload: dict[str, Any]) -> frozenset[str]:
    found = set()
    for text in payload.get("tags") or []:
        try:
            found.add(normalize_tag(str(text)))
        except ValueError:
            continue
    return frozenset(found)


def triggers_of(row: Interaction) -> list[TriggerEvent]:
    """The enrollment triggers an interaction fires (none for most kinds)."""
    ext, advisor, payload = row.external_userid, row.advisor_userid, row.payload or {}
    if not ext:
        return []
    base = {"external_userid": ext, "advisor_userid": advisor, "interaction_id": row.id}
    kind = row.kind
    if kind == "added":
        return [TriggerEvent("contact_added", **base)]
    if kind == "lead_linked" or (kind in ("assigned", "lead_imported") and payload.get("lead_id")):
        return [TriggerEvent("lead_assigned", **base)]
    if kind in ("tagged", "edited"):
        tags = _tags(payload)
        return [TriggerEvent("tag_added", tags=tags, **base)] if tags else []
    if kind == "stage_changed":
        to = payload.get("to")
        if to and to != payload.get("from"):
            return [TriggerEvent("stage_changed", stage=str(to), **base)]
        return []
    if kind == "intent_changed":
        band = payload.get("band")
        if band and band != payload.get("previous_band"):
            return [TriggerEvent("intent_band", band=str(band), **base)]
    return []


def _exits(
    session: Session, services: Services, row: Interaction, now: datetime, report: ConsumeReport
) -> None:
    ext, advisor, payload = row.external_userid, row.advisor_userid, row.payload or {}
    if not ext:
        return
    if row.kind == "churned" and advisor:
        ended = enrollment.exit_enrollments(
            session,
            ext,
            "customer_left",
            now,
            advisor_userid=advisor,
            when=lambda _e, card: card.exit.on_customer_left,
            source_interaction=row.id,
        )
        report.exited += len(ended)
    elif row.kind == "deleted" and advisor:
        ended = enrollment.exit_enrollments(
            session, ext, "removed", now, advisor_userid=advisor, source_interaction=row.id
        )
        report.exited += len(ended)
    elif row.kind == "stage_changed" and payload.get("to") and payload.get("to") != payload.get("from"):
        stage = str(payload["to"])
        by = str(payload.get("by") or "")
        views: dict[str | None, enrollment.CustomerView] = {}

        def left_audience(e: SopEnrollment, card) -> bool:
            if not card.exit.on_stage_change or by == f"sop:{e.card_id}":
                return False  # a card's own stage action never ends it
            if e.advisor_userid not in views:
                views[e.advisor_userid] = enrollment.customer_view(
                    session, ext, e.advisor_userid, services.settings
                )
            return not views[e.advisor_userid].in_audience(card, stage=stage)

        ended = enrollment.exit_enrollments(
            session, ext, "stage_changed", now, when=left_audience, source_interaction=row.id
        )
        report.exited += len(ended)
    elif row.kind == "transfer_completed":
        old, new = payload.get("from"), payload.get("to")
        if old and new and old != new:
            report.moved += enrollment.move_enrollments(session, ext, str(old), str(new), now)


def consume(svc: Services, limit: int = 500) -> ConsumeReport:
    """Read up to ``limit`` new interactions and act on them (one transaction, cursor included)."""
    report = ConsumeReport()
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        text = lock_cursor(session, CONSUMER, now)
        after = Cursor.parse(text) if text else None
        rows = interactions.page(session, after, limit)
        report.read = len(rows)
        report.cursor = text
        if not rows:
            return report
        cards: list[CurrentCard] = enrollment.current_cards(session)
        for row in rows:
            _exits(session, svc, row, now, report)
            for event in triggers_of(row):
                report.fired += 1
                report.enrolled += len(
                    enrollment.enroll_for_trigger(session, svc.settings, event, now, cards)
                )
        report.cursor = str(Cursor(rows[-1].tx_id, rows[-1].id))
        set_cursor(session, CONSUMER, report.cursor, now)
    return report


def page_size(svc: Services) -> int:
    """Interactions per consume. A page is one transaction holding the write lock on SQLite
    (about 1.6 ms per enrollment), where the callback path waits for it: keep it short there."""
    return 200 if svc.engine.dialect.name == "sqlite" else 1000


def consume_all(svc: Services, limit: int | None = None, max_pages: int = 50) -> ConsumeReport:
    """``consume`` until the feed is caught up (or ``max_pages`` pages were read)."""
    total = ConsumeReport()
    limit = limit or page_size(svc)
    for _ in range(max_pages):
        report = consume(svc, limit)
        total.add(report)
        if report.read < limit:
            break
    return total


# -- no_reply ---------------------------------------------------------------------------------------


def scan_no_reply(svc: Services, limit: int = 1000) -> int:
    """Enroll customers silent for a no_reply card's ``days`` (see the module notes); returns
    how many were enrolled. Each card keeps its own scan position."""
    now = svc.clock.now()
    enrolled = 0
    with svc.sessions() as session:
        cards = [c for c in enrollment.current_cards(session) if c.card.trigger.on == "no_reply"]
    for current in cards:
        enrolled += _scan_card(svc, current, now, limit)
    return enrolled


def _scan_card(svc: Services, current: CurrentCard, now: datetime, limit: int) -> int:
    days = current.card.trigger.days  # type: ignore[union-attr]
    cutoff = now - timedelta(days=days)
    name = NO_REPLY_PREFIX + current.card_id
    with svc.sessions.begin() as session:
        position = int(lock_cursor(session, name, now) or 0)
        ids = list(
            session.scalars(
                select(FollowRelation.id)
                .where(FollowRelation.status == RelationStatus.ACTIVE, FollowRelation.id > position)
                .order_by(FollowRelation.id)
                .limit(limit)
            )
        )
        enrolled = 0
        if ids:
            quiet = session.execute(
                select(FollowRelation.external_userid, FollowRelation.advisor_userid)
                .where(
                    FollowRelation.id.in_(ids),
                    FollowRelation.added_at <= cutoff,
                    ~exists().where(
                        SopEnrollment.card_id == current.card_id,
                        SopEnrollment.external_userid == FollowRelation.external_userid,
                    ),
                    ~exists().where(
                        Interaction.external_userid == FollowRelation.external_userid,
                        Interaction.occurred_at >= cutoff,
                        ~Interaction.kind.like("sop\\_%", escape="\\"),
                    ),
                )
                .order_by(FollowRelation.id)
            ).all()
            for ext, advisor in quiet:
                event = TriggerEvent("no_reply", ext, advisor, days=days)
                enrolled += len(enrollment.enroll_for_trigger(session, svc.settings, event, now, [current]))
        # A short page means the end of the relations: start again from the first next time.
        set_cursor(session, name, str(ids[-1]) if len(ids) == limit else "0", now)
    return enrolled

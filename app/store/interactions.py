"""The interaction log: idempotent appends and the cursor feed the CDP reads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, tuple_
from sqlalchemy.orm import Session

from app.store.db import insert_for
from app.store.models import Interaction

T = Interaction.__table__


@dataclass(frozen=True)
class NewInteraction:
    kind: str
    occurred_at: datetime
    dedup_key: str
    advisor_userid: str | None = None
    external_userid: str | None = None
    dealer_code: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    source_event_id: int | None = None


def append(session: Session, items: list[NewInteraction], now: datetime) -> int:
    """Insert what is not there yet (by dedup key); return how many rows were new."""
    if not items:
        return 0
    # Parameter sets, not .values([...]): SQLAlchemy compiles the statement once and sends the
    # rows as multi-row INSERTs ("insertmanyvalues"), instead of compiling a bound parameter per
    # field of every row each time (most of the cost of a lead import's 400 interactions).
    stmt = insert_for(session)(T).on_conflict_do_nothing(index_elements=[T.c.dedup_key]).returning(T.c.id)
    rows = [
        {
            "kind": item.kind,
            "advisor_userid": item.advisor_userid,
            "external_userid": item.external_userid,
            "dealer_code": item.dealer_code,
            "payload": item.payload,
            "occurred_at": item.occurred_at,
            "recorded_at": now,
            "source_event_id": item.source_event_id,
            "dedup_key": item.dedup_key,
        }
        for item in items
    ]
    return len(session.execute(stmt, rows).all())


_DIGITS = re.compile(r"[0-9]+")
_BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True)
class Cursor:
    """A position in the feed: (transaction id, row id). Rendered as ``"<tx>.<id>"``."""

    tx_id: int
    id: int

    def __str__(self) -> str:
        return f"{self.tx_id}.{self.id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        tx, dot, row = text.partition(".")
        # ASCII digits only (str.isdigit also takes '²'), each within the BIGINT columns' range.
        if not dot or not _DIGITS.fullmatch(tx) or not _DIGITS.fullmatch(row) or max(len(tx), len(row)) > 19:
            raise ValueError("cursor must be a value of 'next' or of an item's 'cursor', e.g. 0.42")
        if max(int(tx), int(row)) > _BIGINT_MAX:
            raise ValueError("cursor must be a value of 'next' or of an item's 'cursor', e.g. 0.42")
        return cls(int(tx), int(row))


def page(session: Session, after: Cursor | None, limit: int) -> list[Interaction]:
    """Rows after the cursor in commit-safe order.

    On PostgreSQL a row with a smaller id can commit after a larger one, so ordering by id
    alone would let a reader skip it for ever. Rows are ordered by (tx_id, id) and only rows of
    transactions older than the oldest one still running in this database are served (see
    ``_horizon``): anything that commits later sorts after every row already served. SQLite has
    one writer, so commit order is id order there and tx_id is 0.
    """
    stmt = select(Interaction).order_by(Interaction.tx_id, Interaction.id).limit(limit)
    if after is not None:
        stmt = stmt.where(tuple_(Interaction.tx_id, Interaction.id) > tuple_(after.tx_id, after.id))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.where(Interaction.tx_id < _horizon(session))
    return list(session.scalars(stmt))


# The oldest transaction of THIS database that was open when the snapshot was taken (or the
# snapshot's xmax when none was). pg_snapshot_xmin alone is the oldest open transaction of the
# whole server: a long write in another database on a shared PostgreSQL held the feed (and the
# SOP triggers that read it) back for as long as it ran. Transaction ids are server-wide, so the
# snapshot's in-progress list is narrowed to the ids that backends connected to this database
# (and prepared transactions of it) hold; backend_xid is 32 bits, matched to the 64-bit ids
# modulo 2^32 (ids in progress at once are less than 2^31 apart). Our own id, never in our own
# snapshot's list, bounds it too: rows this transaction writes later must not be passed.
_HORIZON = text(
    """
    SELECT LEAST(
        pg_snapshot_xmax(snap.s)::text::bigint,
        pg_current_xact_id_if_assigned()::text::bigint,
        (SELECT min(x::text::bigint) FROM pg_snapshot_xip(snap.s) AS x
          WHERE x::text::bigint % 4294967296 IN (
                SELECT backend_xid::text::bigint FROM pg_stat_activity
                 WHERE datname = current_database() AND backend_xid IS NOT NULL
                UNION ALL
                SELECT transaction::text::bigint FROM pg_prepared_xacts
                 WHERE database = current_database()))
    ), current_setting('transaction_isolation')
    FROM (SELECT pg_current_snapshot() AS s) AS snap
    """
)
_SERVER_HORIZON = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")


def _horizon(session: Session) -> int:
    """Why this is safe: the snapshot is taken when the statement starts and the backends are
    read after it, so an id open in the snapshot is either still held by its backend (and
    bounds the horizon) or finished before that read, and then the page query, a later
    statement with a later snapshot under READ COMMITTED, sees its rows. The backends' list is
    cached per transaction, hence pg_stat_clear_snapshot first. Under REPEATABLE READ the page
    would reuse the old snapshot, so there the server-wide horizon is kept."""
    session.execute(text("SELECT pg_stat_clear_snapshot()"))
    horizon, isolation = session.execute(_HORIZON).one()
    if isolation != "read committed":
        return int(session.scalar(_SERVER_HORIZON))
    return int(horizon)


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(T)) or 0


def to_json(row: Interaction) -> dict[str, Any]:
    return {
        "cursor": str(Cursor(row.tx_id, row.id)),
        "id": row.id,
        "kind": row.kind,
        "advisor": row.advisor_userid,
        "customer": row.external_userid,
        "dealer": row.dealer_code,
        "payload": row.payload,
        "occurred_at": row.occurred_at.isoformat(),
        "recorded_at": row.recorded_at.isoformat(),
        "source_event": row.source_event_id,
    }

"""Queries on the inbox of callbacks. Each state change is one conditional UPDATE, so two
workers (or a worker and the sweeper) racing on one row cannot both win."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.store.models import InboxEvent, InboxStatus

T = InboxEvent.__table__


@dataclass(frozen=True)
class Stored:
    id: int
    is_new: bool
    job_generation: int


# A row's own values in the batch insert (updated_at takes received_at; the rest are constants).
_ROW_COLUMNS = (
    "source",
    "dedup_key",
    "event_type",
    "corp_id",
    "event_time",
    "plaintext",
    "received_at",
    "deliveries",
)


@dataclass(frozen=True)
class _BatchInsert:
    """The callback path's multi-row upsert for one dialect and one number of rows, compiled
    by SQLAlchemy once and then run on the DBAPI cursor of the caller's connection.

    Why not ``conn.execute``: for this one statement SQLAlchemy's per-execution work (execution
    context, parameter processing, insertmanyvalues batching, result wrapping) cost more CPU
    than the insert and the commit together: about 0.15 ms a batch of the 0.3 ms it took
    (bench/callbacks.py). SQLAlchemy still writes the SQL and the type conversions (each
    column's bind processor, UTCDateTime's included); only the execution is direct, so engine
    events (before_cursor_execute, echo) do not see this statement."""

    sql: str
    order: tuple[str, ...] | None  # parameter names in order, for a positional paramstyle
    constants: dict[str, Any]  # the literal columns' values (status, attempts...), converted
    convert: dict[str, Any]  # column -> its bind processor for this dialect, or None

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> Sequence[Any] | dict[str, Any]:
        values = dict(self.constants)
        for n, row in enumerate(rows):
            for column, process in self.convert.items():
                value = row[column]
                values[f"{column}_{n}"] = process(value) if process is not None else value
        if self.order is None:
            return values
        return [values[name] for name in self.order]


@functools.lru_cache(maxsize=512)  # a dialect or two, batch sizes up to the ingester's MAX_BATCH
def _batch_insert(dialect: Dialect, rows: int) -> _BatchInsert:
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    values = [
        {
            **{name: bindparam(f"{name}_{n}") for name in _ROW_COLUMNS},
            "updated_at": bindparam(f"received_at_{n}"),
            "status": InboxStatus.RECEIVED,
            "attempts": 0,
            "job_generation": 1,
        }
        for n in range(rows)
    ]
    stmt = insert(T).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[T.c.dedup_key], set_={"deliveries": T.c.deliveries + stmt.excluded.deliveries}
    ).returning(T.c.dedup_key, T.c.id, T.c.deliveries, T.c.job_generation)
    compiled = stmt.compile(dialect=dialect)

    def processor(type_: Any) -> Any:
        return type_.dialect_impl(dialect).bind_processor(dialect)

    row_names = {f"{name}_{n}" for name in _ROW_COLUMNS for n in range(rows)}
    constants = {}
    for name, value in compiled.params.items():
        if name not in row_names:
            process = processor(compiled.binds[name].type)
            constants[name] = process(value) if process is not None else value
    convert = {name: processor(T.c[name].type) for name in _ROW_COLUMNS}
    order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    return _BatchInsert(compiled.string, order, constants, convert)


def _execute_batch(
    dbapi_connection: Any, batch: _BatchInsert, rows: Sequence[Mapping[str, Any]]
) -> list[Any]:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(batch.sql, batch.parameters(rows))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def commit_deliveries(engine: Engine, deliveries: Sequence[Mapping[str, Any]]) -> list[Stored]:
    """``store_deliveries`` committed before it returns: the callback path's way, on a pooled
    DBAPI connection without a SQLAlchemy Connection around it (whose begin, commit and return
    to the pool cost about as much as the insert).

    On PostgreSQL the one statement runs in autocommit, its own transaction: no BEGIN and
    COMMIT round trips (0.46 -> 0.22 ms of CPU a batch, half the wait). A connection that
    fails is invalidated, not given back, since SQLAlchemy does not see errors raised on a raw
    cursor: so this engine needs no pre-ping round trip on checkout either (see
    ``Services.ingest_engine``). A pooled connection the server closed meanwhile (a restart)
    fails with a disconnect, and the batch is tried once more on a new connection. (Had the
    server committed before the connection broke, the second try counts each delivery again
    and reports no row as new: no notice is pushed, and the sweeper enqueues the rows after
    INBOX_SWEEP_GRACE. Nothing is lost; only the delivery count is one high.)"""
    try:
        return _commit_once(engine, deliveries)
    except _Disconnected:
        return _commit_once(engine, deliveries)


class _Disconnected(Exception):
    """The pooled connection was dead (raised from the driver's error)."""


def _commit_once(engine: Engine, deliveries: Sequence[Mapping[str, Any]]) -> list[Stored]:
    dbapi_connection = engine.raw_connection()
    autocommit = engine.dialect.name == "postgresql"
    try:
        if autocommit:
            dbapi_connection.driver_connection.autocommit = True
        stored = _store(dbapi_connection, engine.dialect, deliveries)
        if autocommit:
            dbapi_connection.driver_connection.autocommit = False
        else:
            dbapi_connection.commit()
    except BaseException as exc:
        dead = isinstance(exc, Exception) and engine.dialect.is_disconnect(
            exc, dbapi_connection.driver_connection, None
        )
        dbapi_connection.invalidate()  # closed and dropped from the pool: whatever its state
        if dead:
            raise _Disconnected(str(exc)) from exc
        raise
    finally:
        dbapi_connection.close()  # back to the pool (a no-op once invalidated)
    return stored


def store_deliveries(conn: Connection, deliveries: Sequence[Mapping[str, Any]]) -> list[Stored]:
    """Insert callbacks, or count more deliveries of stored ones: one statement for the lot, no
    race. Each item holds ``store_delivery``'s keyword arguments; the answer is in their order.
    It runs in the caller's transaction (``conn``), which commits it.

    A key delivered twice in one batch (WeCom's retry racing its original) is inserted once
    with both deliveries counted, and only its first occurrence is new. The rows go in key
    order, so two batches that share keys lock them in the same order and cannot deadlock."""
    return _store(conn.connection.dbapi_connection, conn.dialect, deliveries)


def _store(dbapi_connection: Any, dialect: Dialect, deliveries: Sequence[Mapping[str, Any]]) -> list[Stored]:
    first: dict[str, dict[str, Any]] = {}
    for item in deliveries:
        key = item["dedup_key"]
        if key in first:
            first[key]["deliveries"] += 1
            continue
        first[key] = {
            "source": item["source"],
            "dedup_key": key,
            "event_type": item["event_type"][:96],
            "corp_id": item["corp_id"][:64],
            "event_time": item["event_time"],
            "plaintext": item["plaintext"],
            "received_at": item["now"],
            "deliveries": 1,
        }
    rows = [first[key] for key in sorted(first)]
    returned = {
        dedup_key: (inbox_id, count, generation)
        for dedup_key, inbox_id, count, generation in _execute_batch(
            dbapi_connection, _batch_insert(dialect, len(rows)), rows
        )
    }
    results: list[Stored] = []
    seen: set[str] = set()
    for item in deliveries:
        key = item["dedup_key"]
        inbox_id, count, generation = returned[key]
        # Counted from zero by this statement: the row is new, and this is its first delivery.
        is_new = key not in seen and count == first[key]["deliveries"]
        seen.add(key)
        results.append(Stored(id=inbox_id, is_new=is_new, job_generation=generation))
    return results


def store_delivery(
    conn: Connection,
    *,
    source: str,
    dedup_key: str,
    event_type: str,
    corp_id: str,
    event_time: int,
    plaintext: str,
    now: datetime,
) -> Stored:
    """Insert a callback, or count one more delivery of a stored one. One statement, no race."""
    item = {
        "source": source,
        "dedup_key": dedup_key,
        "event_type": event_type,
        "corp_id": corp_id,
        "event_time": event_time,
        "plaintext": plaintext,
        "now": now,
    }
    return store_deliveries(conn, [item])[0]


def claim(session: Session, event_id: int, now: datetime, lease: timedelta) -> int | None:
    """Take the row for processing; return this attempt's number (the fencing token) or None
    when it is finished, or held by another worker whose lease has not run out."""
    claimable = or_(
        T.c.status.in_([InboxStatus.RECEIVED, InboxStatus.RETRYING]),
        (T.c.status == InboxStatus.PROCESSING) & (T.c.lease_until < now),
    )
    result = session.execute(
        update(T)
        .where(T.c.id == event_id, claimable)
        .values(
            status=InboxStatus.PROCESSING,
            attempts=T.c.attempts + 1,
            lease_until=now + lease,
            updated_at=now,
        )
        .returning(T.c.attempts)
    ).first()
    return None if result is None else result.attempts


def finish(
    session: Session, event_id: int, attempt: int, status: str, reason: str | None, now: datetime
) -> bool:
    """Mark done/ignored, only if this attempt still holds the row. Runs in the handler's
    transaction, so the handler's writes and the status commit together or not at all."""
    result = session.execute(
        update(T)
        .where(T.c.id == event_id, T.c.status == InboxStatus.PROCESSING, T.c.attempts == attempt)
        .values(status=status, status_reason=reason, lease_until=None, finished_at=now, updated_at=now)
    )
    return result.rowcount == 1


def record_failure(
    session: Session, event_id: int, attempt: int, error: str, final: bool, now: datetime
) -> None:
    session.execute(
        update(T)
        .where(T.c.id == event_id, T.c.attempts == attempt, T.c.status == InboxStatus.PROCESSING)
        .values(
            status=InboxStatus.FAILED if final else InboxStatus.RETRYING,
            last_error=error[:4000],
            lease_until=None,
            updated_at=now,
            finished_at=now if final else None,
        )
    )


def mark_failed(session: Session, event_id: int, error: str, now: datetime) -> None:
    session.execute(
        update(T)
        .where(T.c.id == event_id, T.c.status.in_(InboxStatus.PENDING))
        .values(
            status=InboxStatus.FAILED,
            last_error=error[:4000],
            lease_until=None,
            updated_at=now,
            finished_at=now,
        )
    )


def sweep_candidates(
    session: Session, now: datetime, grace: timedelta, limit: int, after_id: int = 0
) -> list[InboxEvent]:
    """Pending rows old enough that their job should have run: received or retrying rows not
    touched for ``grace``, and processing rows whose lease ran out (their worker died)."""
    cutoff = now - grace
    stmt = (
        select(InboxEvent)
        .where(
            InboxEvent.id > after_id,
            or_(
                InboxEvent.status.in_([InboxStatus.RECEIVED, InboxStatus.RETRYING])
                & (InboxEvent.updated_at <= cutoff),
                (InboxEvent.status == InboxStatus.PROCESSING) & (InboxEvent.lease_until < now),
            ),
        )
        .order_by(InboxEvent.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def bump_generation(session: Session, event_id: int, seen_generation: int, now: datetime) -> int | None:
    """Claim the right to enqueue a fresh job for this row (compare-and-set on the generation)."""
    result = session.execute(
        update(T)
        .where(T.c.id == event_id, T.c.job_generation == seen_generation)
        .values(job_generation=seen_generation + 1, updated_at=now)
        .returning(T.c.job_generation)
    ).first()
    return None if result is None else result.job_generation


def reopen_failed(session: Session, now: datetime, ids: list[int] | None = None) -> list[tuple[int, int]]:
    """Failed rows back to received with a fresh attempt budget; returns (id, generation) pairs."""
    stmt = (
        update(T)
        .where(T.c.status == InboxStatus.FAILED)
        .values(
            status=InboxStatus.RECEIVED,
            attempts=0,
            lease_until=None,
            finished_at=None,
            updated_at=now,
            job_generation=T.c.job_generation + 1,
        )
        .returning(T.c.id, T.c.job_generation)
    )
    if ids:
        stmt = stmt.where(T.c.id.in_(ids))
    return [(row.id, row.job_generation) for row in session.execute(stmt)]


def status_counts(session: Session) -> dict[str, int]:
    counts = dict.fromkeys(InboxStatus.ALL, 0)
    for status, count in session.execute(select(T.c.status, func.count()).group_by(T.c.status)):
        counts[status] = count
    return counts


def delivery_totals(session: Session) -> tuple[int, int]:
    """(stored rows, deliveries received); the difference is retries collapsed by the dedup key."""
    rows, deliveries = session.execute(select(func.count(), func.coalesce(func.sum(T.c.deliveries), 0))).one()
    return int(rows), int(deliveries)


def failed_events(session: Session, limit: int = 100) -> list[InboxEvent]:
    stmt = (
        select(InboxEvent).where(InboxEvent.status == InboxStatus.FAILED).order_by(InboxEvent.id).limit(limit)
    )
    return list(session.scalars(stmt))

"""The effects ledger: side effects on WeCom and decisions that must survive a retry.

A job may run twice (RQ retry, a worker killed after the call but before its commit). Each
effect it causes outside our database (a welcome message, a transfer, a bot card) and each
decision later steps depend on (the advisor chosen) is written here under a key, in its own
short transaction, right after it happens. The next run finds the key and reuses the result.

The window between the WeCom call and this write is covered per call, by WeCom itself: a used
welcome code answers 41051, a started transfer 40100, and app messages are sent with WeCom's
``enable_duplicate_check``. Callers say how they treat those answers.

A decision that only the caller's own rows depend on (lead import's advisor, app/intake/leads.py)
may instead be written in the same transaction as those rows (``record_many``): it then commits
with what it decided, or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.store.db import insert_for
from app.store.models import Effect

T = Effect.__table__


def recorded(sessions: sessionmaker[Session], key: str) -> dict[str, Any] | None:
    with sessions() as session:
        return session.scalar(select(T.c.result).where(T.c.key == key))


def record(
    sessions: sessionmaker[Session], key: str, result: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Store ``result`` under ``key`` unless something is already there; return what is stored.
    First writer wins, so two concurrent runs agree on one decision."""
    with sessions.begin() as session:
        insert = insert_for(session)
        session.execute(
            insert(T)
            .values(key=key, result=result, created_at=now)
            .on_conflict_do_nothing(index_elements=[T.c.key])
        )
        return session.scalar(select(T.c.result).where(T.c.key == key))


def once(
    sessions: sessionmaker[Session], key: str, now: datetime, action: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """Run ``action`` unless ``key`` is recorded; return (result, whether it ran now)."""
    existing = recorded(sessions, key)
    if existing is not None:
        return existing, False
    return record(sessions, key, action(), now), True


def recorded_many(session: Session, keys: Collection[str]) -> dict[str, dict[str, Any]]:
    """What is stored under any of ``keys`` (one query), by key."""
    if not keys:
        return {}
    return dict(session.execute(select(T.c.key, T.c.result).where(T.c.key.in_(list(keys)))).all())


def record_many(
    session: Session, results: Mapping[str, dict[str, Any]], now: datetime
) -> dict[str, dict[str, Any]]:
    """``record`` for many keys, in the caller's transaction: store each result unless its key is
    there already, and return what is stored under each key (first writer wins)."""
    if not results:
        return {}
    insert = insert_for(session)(T).on_conflict_do_nothing(index_elements=[T.c.key]).returning(T.c.key)
    rows = [{"key": key, "result": result, "created_at": now} for key, result in results.items()]
    inserted = set(session.scalars(insert, rows))
    stored = {key: result for key, result in results.items() if key in inserted}
    stored.update(recorded_many(session, [key for key in results if key not in inserted]))
    return stored

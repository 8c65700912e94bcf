"""Engine and session factory. One engine per process; forked children (RQ work horses,
gunicorn workers) drop the parent's pooled connections instead of sharing them."""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_parent_connections() -> None:
    # SQLAlchemy's documented recipe for os.fork(): the child must not reuse the parent's sockets.
    for engine in list(_engines):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parent_connections)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web processes write while a worker reads; busy_timeout makes a writer wait
    # for the lock instead of failing, so a burst of callbacks is slower but never lost.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, *, pre_ping: bool = True, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """``pre_ping`` (PostgreSQL): test each pooled connection with a round trip before use, so a
    server restart costs no failed query. Only an engine whose users invalidate a connection
    that failed them can do without (the callback path's, app/store/inbox.commit_deliveries).
    ``pool_size`` and ``max_overflow`` apply to PostgreSQL (SQLite's pool is sized below)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # LIFO: the connection used last comes back first, its page cache still warm (each
        # SQLite connection has its own), instead of rotating through all of them.
        engine = create_engine(
            url, connect_args={"timeout": 30}, pool_size=20, max_overflow=20, pool_use_lifo=True
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=pre_ping, pool_size=pool_size, max_overflow=max_overflow)
    _engines.add(engine)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def insert_for(session: Session | Connection):
    """The dialect's INSERT (PostgreSQL's or SQLite's), the ones with ``on_conflict_do_*``: every
    idempotent write in the store is one such statement."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert

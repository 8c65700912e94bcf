"""Alembic, driven from code: ``scrm db upgrade`` and the automatic upgrade in demo/test mode."""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


# PostgreSQL advisory lock (per database) held by the one process migrating.
_MIGRATION_LOCK = 0x5C2A_0D01


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision``, one process at a time: gunicorn's workers and a
    worker that start together on an empty database (AUTO_MIGRATE), or a deploy's release step
    racing them, would otherwise create the same tables side by side, and all but one crash.
    The others wait for the lock, then find nothing left to do."""
    database = engine.url.database
    if engine.dialect.name == "postgresql":
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            lock.commit()
            try:
                _upgrade(engine, revision)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
                lock.commit()
    elif engine.dialect.name == "sqlite" and database and database != ":memory:":
        # SQLite runs DDL outside a transaction: a lock file beside the database serialises.
        with open(f"{database}.migrate-lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
            _upgrade(engine, revision)
    else:
        _upgrade(engine, revision)


def _upgrade(engine: Engine, revision: str) -> None:
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()

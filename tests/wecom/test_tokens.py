"""The shared token store on real Redis."""

from __future__ import annotations

import threading

import pytest

from app.clock import FrozenClock, SystemClock
from app.redis_client import connect
from app.wecom.errors import WeComUnavailable
from app.wecom.tokens import FetchedToken, TokenStore, token_key


def store(conn, clock, **kwargs) -> TokenStore:
    return TokenStore(conn, clock, "wwcorp", "contact", **kwargs)


def test_invalidate_deletes_only_the_token_it_names(rconn, clock: FrozenClock) -> None:
    s = store(rconn, clock)
    key = token_key("wwcorp", "contact")
    rconn.set(key, "NEW-TOKEN", ex=600)  # another process already refreshed
    assert s.invalidate("OLD-TOKEN") is False
    assert rconn.get(key) == b"NEW-TOKEN"
    assert s.invalidate("NEW-TOKEN") is True
    assert rconn.get(key) is None


def test_ttl_is_expires_in_minus_margin_but_at_least_60(rconn, clock: FrozenClock) -> None:
    s = store(rconn, clock, safety_margin=300)
    s.get(lambda: FetchedToken("T1", 7200))
    assert 6890 <= rconn.ttl(s.key) <= 6900
    rconn.delete(s.key)
    s.get(lambda: FetchedToken("T2", 100))
    assert 55 <= rconn.ttl(s.key) <= 60
    assert rconn.exists(s.lock_key) == 0  # the lock is released after a refresh


def test_cached_token_is_reused_without_fetching(rconn, clock: FrozenClock) -> None:
    s = store(rconn, clock)
    assert s.get(lambda: FetchedToken("T1", 7200)) == "T1"
    assert s.get(lambda: pytest.fail("must not fetch")) == "T1"


def test_failed_fetch_releases_the_lock(rconn, clock: FrozenClock) -> None:
    s = store(rconn, clock)

    def broken() -> FetchedToken:
        raise RuntimeError("gettoken failed")

    with pytest.raises(RuntimeError):
        s.get(broken)
    assert rconn.exists(s.lock_key) == 0
    assert s.get(lambda: FetchedToken("T1", 7200)) == "T1"


def test_waiter_gives_up_when_the_holder_never_stores_a_token(rconn, clock: FrozenClock) -> None:
    s = store(rconn, clock, lock_ttl=30, wait_timeout=2)
    rconn.set(s.lock_key, "someone-else", px=30_000)  # a holder that is stuck
    with pytest.raises(WeComUnavailable):
        s.get(lambda: pytest.fail("must not fetch while another process holds the lock"))
    assert sum(clock.slept) == pytest.approx(2.0, abs=0.1)


def test_waiter_takes_over_when_the_holder_dies(rconn, redis_url: str) -> None:
    # Real time here: the stale lock expires in Redis (PX), which a FrozenClock cannot move.
    s = store(rconn, SystemClock(), lock_ttl=5, wait_timeout=5, poll_interval=0.02)
    rconn.set(s.lock_key, "dead-process", px=150)
    assert s.get(lambda: FetchedToken("T1", 7200)) == "T1"


def test_refresh_returns_a_token_other_than_the_cached_one(rconn, clock: FrozenClock) -> None:
    s = store(rconn, clock)
    s.get(lambda: FetchedToken("T1", 7200))
    assert s.refresh(lambda: FetchedToken("T2", 7200)) == "T2"
    assert s.cached() == "T2"


def test_concurrent_cold_start_fetches_once(rconn, redis_url: str) -> None:
    calls: list[int] = []
    entered = threading.Event()

    def slow_fetch() -> FetchedToken:
        calls.append(1)
        entered.set()
        threading.Event().wait(0.2)  # hold the lock while the others pile up
        return FetchedToken("T1", 7200)

    results: list[str] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        conn = connect(redis_url)
        try:
            barrier.wait()
            results.append(store(conn, SystemClock(), poll_interval=0.01).get(slow_fetch))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["T1"] * 8
    assert len(calls) == 1

"""The shared limiter: real Redis, FrozenClock (sleep advances the clock, nothing really waits)."""

from __future__ import annotations

import pytest
import redis

from app.clock import FrozenClock
from app.redis_client import connect
from app.wecom.errors import RateLimited, WeComUnavailable
from app.wecom.ratelimit import RateLimiter


@pytest.fixture()
def second_conn(rconn: redis.Redis, redis_url: str):
    conn = connect(redis_url)
    yield conn
    conn.close()


def test_two_limiters_never_exceed_the_limit_in_any_minute(rconn, second_conn, clock: FrozenClock) -> None:
    a = RateLimiter(rconn, clock, 5)
    b = RateLimiter(second_conn, clock, 5)
    granted: list[float] = []
    for _step in range(40):  # 40 steps of 7 s: 280 s of traffic from two "machines"
        for limiter in (a, b, a, b):
            try:
                limiter.acquire("externalcontact/get", max_wait=0)
            except RateLimited:
                continue
            granted.append(clock.time())
        clock.advance(7)
    for t in granted:
        in_window = [g for g in granted if t - 60 < g <= t]
        assert len(in_window) <= 5
    # Not trivially blocked: the budget refills as the window slides.
    assert len(granted) >= 5 * 4
    assert clock.slept == []


def test_acquire_waits_for_the_oldest_call_to_leave_the_window(rconn, clock: FrozenClock) -> None:
    limiter = RateLimiter(rconn, clock, 2)
    start = clock.time()
    assert limiter.acquire("message/send", max_wait=0) == 0.0
    clock.advance(10)
    assert limiter.acquire("message/send", max_wait=0) == 0.0
    clock.advance(5)
    waited = limiter.acquire("message/send", max_wait=60)
    assert waited == pytest.approx(45.0)  # the first call (t=0) leaves the window at t=60
    assert clock.slept == [pytest.approx(45.0)]
    assert clock.time() == pytest.approx(start + 60)
    # And the next one waits for the second call (t=10) to leave: t=70.
    assert limiter.acquire("message/send", max_wait=60) == pytest.approx(10.0)


def test_raises_rate_limited_when_no_slot_within_max_wait(rconn, clock: FrozenClock) -> None:
    limiter = RateLimiter(rconn, clock, 1)
    limiter.acquire("externalcontact/add_msg_template", max_wait=0)
    clock.advance(30)
    with pytest.raises(RateLimited) as info:
        limiter.acquire("externalcontact/add_msg_template", max_wait=5)
    assert info.value.retry_after == pytest.approx(30.0)
    assert info.value.api == "externalcontact/add_msg_template"
    assert isinstance(info.value, WeComUnavailable) and info.value.retryable
    assert sum(clock.slept) <= 5


def test_per_path_override_and_default(rconn, clock: FrozenClock) -> None:
    limiter = RateLimiter(rconn, clock, 100, {"/externalcontact/add_msg_template": 2})
    assert limiter.limit_for("externalcontact/add_msg_template") == 2
    assert limiter.limit_for("externalcontact/get") == 100
    for _ in range(2):
        limiter.acquire("externalcontact/add_msg_template", max_wait=0)
    with pytest.raises(RateLimited):
        limiter.acquire("externalcontact/add_msg_template", max_wait=0)
    for _ in range(50):  # another API has its own budget
        limiter.acquire("externalcontact/get", max_wait=0)


def test_paths_are_normalized_to_one_budget(rconn, clock: FrozenClock) -> None:
    limiter = RateLimiter(rconn, clock, 1)
    limiter.acquire("/cgi-bin/externalcontact/get?external_userid=x", max_wait=0)
    with pytest.raises(RateLimited):
        limiter.acquire("externalcontact/get", max_wait=0)


def test_keys_are_namespaced_and_expire(rconn, clock: FrozenClock) -> None:
    RateLimiter(rconn, clock, 10, scope="wwcorp").acquire("user/get", max_wait=0)
    keys = [k.decode() for k in rconn.scan_iter("*")]
    assert keys == ["scrm:ratelimit:wwcorp:user/get"]
    assert 0 < rconn.pttl(keys[0]) <= 60_000


def test_scopes_do_not_share_a_budget(rconn, clock: FrozenClock) -> None:
    RateLimiter(rconn, clock, 1, scope="corp-a").acquire("user/get", max_wait=0)
    RateLimiter(rconn, clock, 1, scope="corp-b").acquire("user/get", max_wait=0)
    with pytest.raises(RateLimited):
        RateLimiter(rconn, clock, 1, scope="corp-a").acquire("user/get", max_wait=0)


def test_lowered_limit_waits_until_enough_calls_leave(rconn, clock: FrozenClock) -> None:
    high = RateLimiter(rconn, clock, 3)
    for _ in range(3):
        high.acquire("tag/list", max_wait=0)
        clock.advance(10)
    # Three calls at t=0,10,20 and now t=30; a limit of 1 needs the t=20 call gone (t=80).
    low = RateLimiter(rconn, clock, 1)
    assert low.acquire("tag/list", max_wait=100) == pytest.approx(50.0)


def test_rejects_nonsense_limits(rconn, clock: FrozenClock) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rconn, clock, 0)
    with pytest.raises(ValueError):
        RateLimiter(rconn, clock, 10, {"x": 0})

"""SharedOffsetClock: simulated time shared through a Redis key (the demo's processes), and the
CLOCK_OFFSET_KEY setting that makes create_app use it."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from app import create_app
from app.clock import FrozenClock, SharedOffsetClock, SystemClock
from app.config import ConfigError, load_settings
from app.redis_client import connect

KEY = "test:clock-offset"


@pytest.fixture()
def redis_client(redis_url: str, clean_state: None):
    client = connect(redis_url)
    yield client
    client.close()


def test_starts_on_real_time_and_advances(redis_client) -> None:
    clock = SharedOffsetClock(redis_client, KEY)
    assert abs(clock.time() - time.time()) < 1
    assert clock.advance(timedelta(days=1)) == pytest.approx(86400)
    assert clock.time() - time.time() == pytest.approx(86400, abs=1)
    assert clock.now().timestamp() == pytest.approx(clock.time(), abs=1)
    assert float(redis_client.get(KEY)) == pytest.approx(86400)


def test_never_backwards(redis_client) -> None:
    clock = SharedOffsetClock(redis_client, KEY, cache=0)
    clock.advance(3600)
    assert clock.advance(-100) == pytest.approx(3600)
    redis_client.set(KEY, "10")  # someone rewrote the key: this process keeps the larger offset
    assert clock.offset == pytest.approx(3600)


def test_processes_share_the_offset_within_the_cache(redis_client) -> None:
    mine = SharedOffsetClock(redis_client, KEY, cache=0.2)
    other = SharedOffsetClock(redis_client, KEY, cache=0.2)
    assert other.offset == 0
    mine.advance(7200)
    assert mine.offset == pytest.approx(7200)  # the advancing process sees it at once
    assert other.offset == 0  # the other one reads again after its cache
    time.sleep(0.25)
    assert other.offset == pytest.approx(7200)


def test_redis_away_keeps_the_last_offset(redis_client) -> None:
    clock = SharedOffsetClock(redis_client, KEY, cache=0)
    clock.advance(60)

    class Broken:
        def get(self, key: str) -> Any:
            raise ConnectionError("redis is gone")

    clock._redis = Broken()
    assert clock.offset == pytest.approx(60)


def test_needs_a_key(redis_client) -> None:
    with pytest.raises(ValueError):
        SharedOffsetClock(redis_client, "")


def test_create_app_uses_the_key_and_a_mapping_clock_still_wins(
    app_config: dict[str, Any], redis_client
) -> None:
    shared = create_app({**app_config, "CLOCK": None, "CLOCK_OFFSET_KEY": KEY})
    try:
        clock = shared.extensions["scrm"].clock
        assert isinstance(clock, SharedOffsetClock) and clock.key == KEY
        clock.advance(86400)
        assert float(redis_client.get(KEY)) == pytest.approx(86400)
    finally:
        shared.extensions["scrm"].close()
    frozen = FrozenClock()
    injected = create_app({**app_config, "CLOCK": frozen, "CLOCK_OFFSET_KEY": KEY})
    assert injected.extensions["scrm"].clock is frozen
    injected.extensions["scrm"].close()
    plain = create_app({**app_config, "CLOCK": None})
    assert isinstance(plain.extensions["scrm"].clock, SystemClock)
    plain.extensions["scrm"].close()


def test_refused_in_production() -> None:
    with pytest.raises(ConfigError, match="CLOCK_OFFSET_KEY"):
        load_settings({"SCRM_MODE": "production", "CLOCK_OFFSET_KEY": KEY}, environ={})
    assert load_settings({"SCRM_MODE": "demo", "CLOCK_OFFSET_KEY": KEY}, environ={}).CLOCK_OFFSET_KEY == KEY

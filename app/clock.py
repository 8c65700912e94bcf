"""Injectable time. Code asks the app's clock instead of calling time.time() or datetime.now(),
so schedules, leases and expiries are tested by moving a clock, not by sleeping."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""

    def time(self) -> float:
        """Seconds since the epoch."""

    def sleep(self, seconds: float) -> None:
        """Wait; a test clock advances instead."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FrozenClock:
    """A clock that moves only when told to (``advance``) or when code sleeps on it."""

    def __init__(self, start: datetime | float | None = None) -> None:
        if start is None:
            start = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
        self._t = start.timestamp() if isinstance(start, datetime) else float(start)
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def time(self) -> float:
        with self._lock:
            return self._t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float | timedelta) -> None:
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        with self._lock:
            self._t += max(0.0, float(seconds))


class OffsetClock:
    """Real time plus an offset that ``advance`` grows: a live server (the sandbox) can jump
    ahead, to expire tokens and welcome codes, while requests and sleeps still take real time."""

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = float(offset)
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def time(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def advance(self, seconds: float | timedelta) -> None:
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        with self._lock:
            # Never backwards: expiries already handed out must not come back to life.
            self._offset += max(0.0, float(seconds))


class SharedOffsetClock(OffsetClock):
    """Real time plus an offset kept in Redis under ``key``: every process that reads the same
    key (the demo's gunicorn, its worker and the demo itself) sees the same simulated time, and
    ``advance`` in any of them moves all of them. The offset is read at most every ``cache``
    seconds (another process sees an advance that much later), so asking the time costs nothing
    per call; an unreachable Redis keeps the last offset read. Never backwards."""

    def __init__(self, redis_client: Any, key: str, cache: float = 0.2) -> None:
        if not key:
            raise ValueError("SharedOffsetClock needs a Redis key")
        super().__init__()
        self._redis = redis_client
        self.key = key
        self._cache = cache
        self._read_at = float("-inf")  # time.monotonic() of the last read

    @property
    def offset(self) -> float:
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self._cache:
                self._read_at = now
                try:
                    value = self._redis.get(self.key)
                except Exception:  # Redis away: keep the last offset; asking the time must not fail
                    value = None
                if value is not None:
                    self._offset = max(self._offset, float(value))
            return self._offset

    def advance(self, seconds: float | timedelta) -> float:  # type: ignore[override]
        """Move every process's clock forward (a negative amount does nothing); the new offset."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        value = float(self._redis.incrbyfloat(self.key, max(0.0, float(seconds))))
        with self._lock:
            self._offset = max(self._offset, value)
            self._read_at = time.monotonic()
            return self._offset


system_clock = SystemClock()

"""Per-API calls-per-minute limits shared by every worker process on every machine.

WeCom counts calls per corp and per API (REFERENCE.md section 5) and blocks the corp for the rest
of the window once a limit is hit (45009), so the budget must be shared, not per process. The
limiter is hand-written because RQ's own ``RateLimit`` (rq 3) caps how many jobs of a queue run at
once, not how many HTTP calls go out per minute, and one job may make several calls.

A sliding-window log (one sorted set per API) rather than GCRA: GCRA with a burst of ``limit``
lets up to ~2x limit through in some 60 s windows, while the log guarantees that no 60 s window
ever holds more than ``limit`` calls, which is what WeCom's "per minute" limits ask for.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping

import redis

from app.clock import Clock
from app.wecom.errors import RateLimited

log = logging.getLogger(__name__)

KEY_PREFIX = "scrm:ratelimit:"

# Atomic check-and-take. Time is passed in (ARGV[1]) rather than read with Redis TIME so the
# injected clock drives it: tests move a FrozenClock, production hosts share NTP time.
# Returns 0 when a slot was taken, else the milliseconds until the next slot frees up.
_TAKE_SLOT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
-- After a limit was lowered the log can hold more than limit entries: the slot frees when
-- enough of the oldest ones have left the window.
local entry = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
local wait = math.ceil(tonumber(entry[2]) + window - now)
if wait < 1 then wait = 1 end
return wait
"""


def normalize_api(api_path: str) -> str:
    """``/cgi-bin/externalcontact/get?x=1`` style inputs reduce to ``externalcontact/get``."""
    path = api_path.split("?", 1)[0].strip("/")
    return path.removeprefix("cgi-bin/")


class RateLimiter:
    """Calls-per-minute limits per API path, enforced across processes through Redis."""

    def __init__(
        self,
        client: redis.Redis,
        clock: Clock,
        default_per_minute: int,
        overrides: Mapping[str, int] | None = None,
        *,
        scope: str = "",
        window_seconds: float = 60.0,
    ) -> None:
        limits = {normalize_api(k): int(v) for k, v in (overrides or {}).items()}
        if default_per_minute < 1 or any(v < 1 for v in limits.values()):
            raise ValueError("rate limits must be at least 1 call per window")
        self._redis = client
        self._clock = clock
        self._default = int(default_per_minute)
        self._limits = limits
        # Scope (the corp id) keeps two corps sharing one Redis from eating each other's budget.
        self._prefix = f"{KEY_PREFIX}{scope}:" if scope else KEY_PREFIX
        self._window_ms = int(window_seconds * 1000)
        self._take = client.register_script(_TAKE_SLOT)

    def limit_for(self, api_path: str) -> int:
        return self._limits.get(normalize_api(api_path), self._default)

    def key_for(self, api_path: str) -> str:
        return self._prefix + normalize_api(api_path)

    def try_acquire(self, api_path: str) -> float:
        """Take a slot if one is free: 0.0, else the seconds until the next one frees up."""
        now_ms = int(self._clock.time() * 1000)
        member = f"{now_ms}:{secrets.token_hex(8)}"  # unique: many calls share one millisecond
        wait_ms = self._take(
            keys=[self.key_for(api_path)],
            args=[now_ms, self._window_ms, self.limit_for(api_path), member],
        )
        return int(wait_ms) / 1000.0

    def acquire(self, api_path: str, max_wait: float) -> float:
        """Block (on the injected clock) until a slot is taken; return the seconds waited.

        Raises RateLimited as soon as the next free slot is known to lie beyond ``max_wait``:
        sleeping first would only hold a worker for nothing, since slots free up no sooner."""
        waited = 0.0
        while True:
            wait = self.try_acquire(api_path)
            if wait <= 0:
                if waited:
                    log.info("rate limit: waited %.2fs for %s", waited, normalize_api(api_path))
                return waited
            if waited + wait > max_wait:
                raise RateLimited(normalize_api(api_path), waited, wait)
            self._clock.sleep(wait)
            waited += wait

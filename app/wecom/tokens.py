"""The access token of one WeCom app, shared by every process through Redis.

WeCom hands out one token per app and limits gettoken calls, so workers must not each fetch their
own. When the cached token is missing, one process refreshes it under a Redis lock and the others
wait briefly and re-read the fresh token. The token is never logged.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import redis

from app.clock import Clock
from app.wecom.errors import WeComUnavailable

log = logging.getLogger(__name__)

# Delete only if the value is still ours: the lock owner, or the token a caller saw rejected.
# A plain DEL could remove a lock another process took after ours expired, or a fresh token.
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

MIN_TTL = 60


@dataclass(frozen=True)
class FetchedToken:
    access_token: str
    expires_in: int


def token_key(corp_id: str, app_name: str) -> str:
    return f"scrm:wecom:token:{corp_id}:{app_name}"


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


class TokenStore:
    """Cached token for (corp, app). ``fetch`` callables do the actual gettoken call."""

    def __init__(
        self,
        client: redis.Redis,
        clock: Clock,
        corp_id: str,
        app_name: str,
        *,
        safety_margin: int = 300,
        lock_ttl: float = 30.0,
        wait_timeout: float | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        self._redis = client
        self._clock = clock
        self.key = token_key(corp_id, app_name)
        self.lock_key = self.key + ":lock"
        self._margin = safety_margin
        # The lock must outlive the holder's gettoken call (rate-limit wait + HTTP timeout), or a
        # second process would refresh too; if the holder dies the lock still frees itself.
        self._lock_ttl_ms = int(lock_ttl * 1000)
        self._wait_timeout = 2 * lock_ttl if wait_timeout is None else wait_timeout
        self._poll = poll_interval
        self._delete_if_equal = client.register_script(_DELETE_IF_EQUAL)

    def cached(self) -> str | None:
        return _text(self._redis.get(self.key))

    def ttl_for(self, expires_in: int) -> int:
        """Expire early so no process uses a token WeCom is about to reject."""
        return max(MIN_TTL, int(expires_in) - self._margin)

    def get(self, fetch: Callable[[], FetchedToken]) -> str:
        """The cached token, or a fresh one fetched by exactly one process."""
        return self.cached() or self._obtain(fetch, unwanted=None)

    def refresh(self, fetch: Callable[[], FetchedToken]) -> str:
        """A token other than the one cached now (one process fetches; the rest reuse it)."""
        return self._obtain(fetch, unwanted=self.cached())

    def invalidate(self, token: str) -> bool:
        """Forget ``token`` if it is still the cached one; True if it was deleted.

        A process that holds a stale token must not delete the fresh one another process stored."""
        return bool(self._delete_if_equal(keys=[self.key], args=[token]))

    def _usable(self, unwanted: str | None) -> str | None:
        token = self.cached()
        return token if token and token != unwanted else None

    def _obtain(self, fetch: Callable[[], FetchedToken], unwanted: str | None) -> str:
        waited = 0.0
        while True:
            owner = secrets.token_hex(16)
            if self._redis.set(self.lock_key, owner, nx=True, px=self._lock_ttl_ms):
                try:
                    # Another process may have stored a token between our read and our lock.
                    token = self._usable(unwanted)
                    if token:
                        return token
                    fetched = fetch()
                    ttl = self.ttl_for(fetched.expires_in)
                    self._redis.set(self.key, fetched.access_token, ex=ttl)
                    log.info("stored a new WeCom access token in %s (ttl %ss)", self.key, ttl)
                    return fetched.access_token
                finally:
                    self._delete_if_equal(keys=[self.lock_key], args=[owner])
            if waited >= self._wait_timeout:
                raise WeComUnavailable("gettoken", f"no token after waiting {waited:.1f}s for a refresh")
            self._clock.sleep(self._poll)
            waited += self._poll
            token = self._usable(unwanted)
            if token:
                return token

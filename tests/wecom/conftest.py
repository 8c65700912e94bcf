"""Fixtures for the WeCom API client: real Redis (flushed per test), mocked HTTP (``responses``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import responses

from app.clock import Clock, FrozenClock
from app.redis_client import connect
from app.wecom.client import WeComClient
from app.wecom.ratelimit import RateLimiter

API = "http://wecom.test/cgi-bin/"
CORP = "wwtestcorp"
SECRET = "s3cr3t-contact-secret-value"


@pytest.fixture()
def rconn(clean_state: None, redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture()
def http() -> Iterator[responses.RequestsMock]:
    # Unmatched URLs raise ConnectionError inside `responses`: nothing reaches the network.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def query(request: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


def calls_to(http: responses.RequestsMock, path: str) -> list[Any]:
    return [c for c in http.calls if urlsplit(c.request.url).path == "/cgi-bin/" + path]


class TokenServer:
    """A gettoken endpoint handing out TOKEN-1, TOKEN-2, ... (one new token per call)."""

    def __init__(self, http: responses.RequestsMock, expires_in: int = 7200) -> None:
        self._n = count(1)
        self.expires_in = expires_in
        self.issued: list[str] = []
        http.add_callback(responses.GET, API + "gettoken", callback=self._answer)

    def _answer(self, request: Any) -> tuple[int, dict[str, str], str]:
        import json

        q = query(request)
        if q.get("corpid") != CORP or q.get("corpsecret") != SECRET:
            return 200, {}, json.dumps({"errcode": 40001, "errmsg": "invalid credential"})
        token = f"TOKEN-{next(self._n)}-{'x' * 20}"
        self.issued.append(token)
        return (
            200,
            {},
            json.dumps({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.expires_in}),
        )


@pytest.fixture()
def token_server(http: responses.RequestsMock) -> TokenServer:
    return TokenServer(http)


MakeClient = Callable[..., WeComClient]


@pytest.fixture()
def make_client(redis_url: str, rconn: redis.Redis, clock: FrozenClock) -> Iterator[MakeClient]:
    """Each call is a separate "process": its own Redis connection, limiter and client."""
    opened: list[redis.Redis] = []

    def build(
        *,
        clock_: Clock | None = None,
        per_minute: int = 1000,
        overrides: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> WeComClient:
        conn = connect(redis_url)
        opened.append(conn)
        use_clock = clock_ or clock
        limiter = RateLimiter(conn, use_clock, per_minute, overrides, scope=CORP)
        kwargs.setdefault("timeout", 2.0)
        return WeComClient(
            CORP,
            SECRET,
            "contact",
            api_base=API,
            redis_client=conn,
            limiter=limiter,
            clock=use_clock,
            **kwargs,
        )

    yield build
    for conn in opened:
        conn.close()

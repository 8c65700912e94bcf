"""The WeCom API client RQ workers use: wechatpy's wrappers with shared tokens, shared rate limits
and bounded retries.

wechatpy 1.8.18 alone does not fit a fleet of workers (REFERENCE.md section 6): it caches the token
per instance, hard-codes the gettoken URL, retries 40001/40014/42001 without bound, and does not
retry -1, 45009, 5xx or timeouts at all. ``WeComClient`` keeps every wechatpy wrapper
(``client.external_contact.get``, ``client.message.send_text``, ``client.post`` ...) but routes them
through its own ``_request``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis
import requests
from urllib3.exceptions import NewConnectionError
from wechatpy.enterprise import WeChatClient

from app.clock import Clock
from app.wecom.errors import OutcomeUnknown, WeComError, WeComUnavailable
from app.wecom.ratelimit import RateLimiter, normalize_api
from app.wecom.tokens import FetchedToken, TokenStore

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

TOKEN_EXPIRED = frozenset({40014, 42001})  # invalid / expired access_token: refetch once
BUSY = frozenset({-1, 45009})  # system busy / frequency limit: back off and retry
_NETWORK_ERRORS = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
# Calls that make something anew each time and that WeCom has no dedup handle for: a blind retry
# after a timeout could make a second mass-send task or a second QR code. Their callers record an
# attempt and list what WeCom made before calling again (app/campaigns/submit.py, app/sop/runner.py,
# app/intake/contact_ways.py). Other writes are safe to repeat: a welcome code is single-use
# (41051), a pending transfer answers 40100, app messages carry enable_duplicate_check, and a
# tag, reminder or media upload made twice is harmless.
NOT_REPEATABLE = frozenset({"externalcontact/add_msg_template", "externalcontact/add_contact_way"})

_SENSITIVE_QUERY = re.compile(r"(access_token|corpsecret)=[^&\s'\"]*", re.IGNORECASE)


def redact(text: str, *literals: str | None) -> str:
    """Strip credentials from text that may quote a request URL (requests/urllib3 errors do)."""
    text = _SENSITIVE_QUERY.sub(r"\1=***", text)
    for literal in literals:
        if literal:
            text = text.replace(literal, "***")
    return text


class _RedactingFilter(logging.Filter):
    """urllib3 logs every request line, query string included, at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_urllib3_log = logging.getLogger("urllib3.connectionpool")
if not any(isinstance(f, _RedactingFilter) for f in _urllib3_log.filters):
    _urllib3_log.addFilter(_RedactingFilter())


class _Retryable(Exception):
    """One failed attempt that a later attempt may fix; ``reason`` is already redacted.
    ``maybe_done``: the request may have been carried out (no answer came back)."""

    def __init__(self, reason: str, errcode: int | None = None, *, maybe_done: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errcode = errcode
        self.maybe_done = maybe_done


class WeComClient(WeChatClient):
    """wechatpy's enterprise client for one app (``contact`` or ``agent``) of one corp."""

    def __init__(
        self,
        corp_id: str,
        secret: str,
        app_name: str,
        *,
        api_base: str,
        redis_client: redis.Redis,
        limiter: RateLimiter,
        clock: Clock,
        timeout: float = 5.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        rate_limit_max_wait: float = 10.0,
        agent_id: int | None = None,
    ) -> None:
        # auto_retry=False: wechatpy's own token retry recurses without bound.
        super().__init__(corp_id, secret, timeout=timeout, auto_retry=False)
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.app_name = app_name
        self.agent_id = agent_id
        self.api_base = api_base if api_base.endswith("/") else api_base + "/"
        self.API_BASE_URL = self.api_base  # for wechatpy code that reads it directly
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rate_limit_max_wait = rate_limit_max_wait
        self._limiter = limiter
        self._clock = clock
        self._jitter = random.Random()
        self.tokens = TokenStore(
            redis_client,
            clock,
            corp_id,
            app_name,
            lock_ttl=rate_limit_max_wait + timeout + 5.0,
        )

    def __repr__(self) -> str:  # the default is harmless; this one is also useful
        return f"<WeComClient corp={self.corp_id} app={self.app_name} base={self.api_base}>"

    # -- token ------------------------------------------------------------------------------------

    @property
    def access_token(self) -> str:  # type: ignore[override]
        """The shared token from Redis; wechatpy's per-instance ``expires_at`` plays no part."""
        try:
            return self.tokens.get(self._gettoken)
        except _Retryable as exc:
            raise WeComUnavailable("gettoken", exc.reason, exc.errcode) from None

    def fetch_access_token(self) -> dict[str, Any]:
        """wechatpy's hook, kept for callers that want a new token: one process refreshes."""
        try:
            return {"access_token": self.tokens.refresh(self._gettoken)}
        except _Retryable as exc:
            raise WeComUnavailable("gettoken", exc.reason, exc.errcode) from None

    def _gettoken(self) -> FetchedToken:
        """One gettoken call (the caller's loop retries). Runs under the token lock."""
        self._limiter.acquire("gettoken", self.rate_limit_max_wait)
        request = {"params": {"corpid": self.corp_id, "corpsecret": self.secret}, "timeout": self.timeout}
        try:
            result = self._send("get", self.api_base + "gettoken", request)
        except _Retryable as exc:
            # gettoken makes nothing, and the API call it is for has not gone out: never "maybe done".
            raise _Retryable(exc.reason, exc.errcode) from None
        if not isinstance(result, dict):
            raise _Retryable("gettoken answered without JSON")
        errcode = int(result.get("errcode", 0) or 0)
        if errcode in BUSY:
            raise _Retryable(f"errcode={errcode}", errcode)
        if errcode or not result.get("access_token"):
            raise WeComError(errcode or None, self._clean(str(result.get("errmsg", ""))), "gettoken")
        return FetchedToken(str(result["access_token"]), int(result.get("expires_in", 7200)))

    # -- every API call ---------------------------------------------------------------------------

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        """One API call with rate limiting, one token refresh and bounded backoff.

        40014/42001: drop that token, fetch a fresh one, retry once; a second one is raised.
        -1, 45009, HTTP 5xx, timeouts, connection errors: back off, at most ``max_attempts`` tries,
        then WeComUnavailable — except that a call in NOT_REPEATABLE whose request may have been
        carried out (no answer: a read timeout, a broken connection, a 5xx) raises OutcomeUnknown
        at once. Any other errcode: WeComError at once."""
        url, api = self._resolve(url_or_endpoint, kwargs.pop("api_base_url", None))
        result_processor: Callable[[Any], Any] | None = kwargs.pop("result_processor", None)
        params = dict(kwargs.pop("params", None) or {})
        # A caller that brings its own token manages it; we neither inject nor refresh it.
        own_token = "access_token" in params
        if isinstance(kwargs.get("data"), dict):
            kwargs["data"] = json.dumps(kwargs["data"], ensure_ascii=False).encode("utf-8")
        kwargs.setdefault("timeout", self.timeout)

        failures = 0
        refreshed = False
        while True:
            token = params.get("access_token") if own_token else None
            try:
                if not own_token:
                    # Not the property: a failed gettoken must count as a failed attempt here.
                    token = self.tokens.get(self._gettoken)
                self._limiter.acquire(api, self.rate_limit_max_wait)
                result = self._send(method, url, {**kwargs, "params": {**params, "access_token": token}})
                errcode = int(result.get("errcode", 0) or 0) if isinstance(result, dict) else 0
                if errcode in BUSY:
                    raise _Retryable(f"errcode={errcode}", errcode)
            except _Retryable as exc:
                failures += 1
                if exc.maybe_done and api in NOT_REPEATABLE:
                    raise OutcomeUnknown(api, f"{exc.reason}; WeCom may have carried it out") from None
                if failures >= self.max_attempts:
                    raise WeComUnavailable(
                        api, f"{exc.reason} after {failures} attempts", exc.errcode
                    ) from None
                delay = self._backoff(failures)
                log.warning(
                    "WeCom %s attempt %d failed (%s); retrying in %.2fs", api, failures, exc.reason, delay
                )
                self._clock.sleep(delay)
                continue

            if errcode == 0:
                return result_processor(result) if result_processor else result
            errmsg = self._clean(str(result.get("errmsg", "")), token)
            if errcode in TOKEN_EXPIRED and not own_token and not refreshed:
                refreshed = True
                dropped = self.tokens.invalidate(token or "")
                log.info(
                    "WeCom %s: errcode %d, token %s; retrying once",
                    api,
                    errcode,
                    "dropped" if dropped else "already replaced",
                )
                continue
            raise WeComError(errcode, errmsg, api)

    def _send(self, method: str, url: str, kwargs: dict[str, Any]) -> Any:
        """One HTTP exchange: the decoded JSON (or the raw response for media downloads)."""
        try:
            res = self._http.request(method=method, url=url, **kwargs)
        except _NETWORK_ERRORS as exc:
            # The exception text quotes the URL with its token; keep only a redacted copy.
            raise _Retryable(
                f"{type(exc).__name__}: {self._clean(str(exc), *self._tokens_in(kwargs))}",
                maybe_done=not _never_sent(exc),
            ) from None
        if res.status_code >= 500 or res.status_code == 429:
            raise _Retryable(f"HTTP {res.status_code}", maybe_done=res.status_code != 429)
        if res.status_code >= 400:
            raise WeComError(None, f"HTTP {res.status_code}", normalize_api(urlsplit(url).path))
        try:
            return json.loads(res.content.decode("utf-8", "ignore"), strict=False)
        except ValueError:
            return res  # wechatpy returns non-JSON bodies (media files) as the response itself

    # -- helpers ------------------------------------------------------------------------------------

    def _resolve(self, url_or_endpoint: str, api_base_url: str | None) -> tuple[str, str]:
        """The full URL, and the API path the limiter and error messages use."""
        if url_or_endpoint.startswith(("http://", "https://")):
            url = url_or_endpoint
        else:
            url = (api_base_url or self.api_base) + url_or_endpoint.lstrip("/")
        return url, normalize_api(urlsplit(url).path)

    def _backoff(self, failures: int) -> float:
        # Jitter below the doubling step keeps delays growing while workers that failed together
        # (one outage) spread out instead of retrying in lockstep.
        delay = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
        return delay * (1 + 0.25 * self._jitter.random())

    def _clean(self, text: str, *tokens: str | None) -> str:
        return redact(text, self.secret, *tokens)

    @staticmethod
    def _tokens_in(kwargs: dict[str, Any]) -> list[str]:
        params = kwargs.get("params") or {}
        return [str(params[k]) for k in ("access_token", "corpsecret") if params.get(k)]

    # -- APIs wechatpy 1.8.18 lacks (REFERENCE.md section 6) ---------------------------------------

    def transfer_customer(
        self,
        handover_userid: str,
        takeover_userid: str,
        external_userids: list[str],
        transfer_success_msg: str | None = None,
    ) -> dict[str, Any]:
        """On-job transfer (≤100 customers). errcode 0 per customer means the transfer started."""
        data: dict[str, Any] = {
            "handover_userid": handover_userid,
            "takeover_userid": takeover_userid,
            "external_userid": list(external_userids),
        }
        if transfer_success_msg is not None:
            data["transfer_success_msg"] = transfer_success_msg
        return self.post("externalcontact/transfer_customer", data=data)

    def get_groupmsg_task(self, msgid: str, limit: int = 1000, cursor: str | None = None) -> dict[str, Any]:
        return self.post("externalcontact/get_groupmsg_task", data=_paged({"msgid": msgid}, limit, cursor))

    def get_groupmsg_send_result(
        self, msgid: str, userid: str, limit: int = 1000, cursor: str | None = None
    ) -> dict[str, Any]:
        data = _paged({"msgid": msgid, "userid": userid}, limit, cursor)
        return self.post("externalcontact/get_groupmsg_send_result", data=data)

    def get_groupmsg_list_v2(
        self, start_time: int, end_time: int, creator: str | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """The corp's single-chat mass sends created in [start_time, end_time] (≤ one month)."""
        data: dict[str, Any] = {"chat_type": "single", "start_time": start_time, "end_time": end_time}
        if creator:
            data["creator"] = creator
        data["filter_type"] = 0
        return self.post("externalcontact/get_groupmsg_list_v2", data=_paged(data, 100, cursor))

    def remind_groupmsg_send(self, msgid: str) -> dict[str, Any]:
        return self.post("externalcontact/remind_groupmsg_send", data={"msgid": msgid})

    def cancel_groupmsg_send(self, msgid: str) -> dict[str, Any]:
        return self.post("externalcontact/cancel_groupmsg_send", data={"msgid": msgid})

    def add_contact_way(self, data: dict[str, Any]) -> dict[str, Any]:
        """A contact way (「联系我」): ``config_id``, and ``qr_code`` for scene 2."""
        return self.post("externalcontact/add_contact_way", data=data)

    def get_contact_way(self, config_id: str) -> dict[str, Any]:
        """One contact way by config_id (under ``contact_way``); 41044 when WeCom has no such one."""
        return self.post("externalcontact/get_contact_way", data={"config_id": config_id})

    def list_contact_way(
        self, start_time: int, end_time: int, cursor: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """One page of the config_ids of contact ways the corp made through the API in
        [start_time, end_time] (``contact_way`` [{config_id}], ``next_cursor``); start_time at
        most 90 days back."""
        data: dict[str, Any] = {"start_time": start_time, "end_time": end_time}
        return self.post("externalcontact/list_contact_way", data=_paged(data, limit, cursor))

    def get_user_id_by_code(self, code: str) -> dict[str, Any]:
        """OAuth2 code → identity via ``auth/getuserinfo`` (wechatpy calls the legacy path).

        Members come back with ``userid``; non-members with ``openid``/``external_userid``."""
        return self.get("auth/getuserinfo", params={"code": code})


def cursor_pages(fetch: Callable[[str | None], dict[str, Any]], key: str) -> Iterator[dict[str, Any]]:
    """Every item under ``key`` of a cursor-paged WeCom list: ``fetch(cursor)`` gets one page
    (None for the first), ``next_cursor`` leads to the next until it is empty."""
    cursor = None
    while True:
        answer = fetch(cursor)
        yield from answer.get(key) or []
        cursor = answer.get("next_cursor") or None
        if not cursor:
            return


def _never_sent(exc: Exception) -> bool:
    """The request certainly did not reach WeCom: no connection was made (refused, unresolvable,
    connect timeout). A read timeout or a connection broken mid-exchange may have been carried out."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _paged(data: dict[str, Any], limit: int, cursor: str | None) -> dict[str, Any]:
    data["limit"] = limit
    if cursor:
        data["cursor"] = cursor
    return data


# -- factories ----------------------------------------------------------------------------------------

_factory_lock = threading.Lock()


def contact_client(svc: Services) -> WeComClient:
    """The 客户联系 app's client (customer-contact APIs), one per Services object."""
    return _client(svc, "contact")


def agent_client(svc: Services) -> WeComClient:
    """The self-built app's client (message/send, OAuth), one per Services object."""
    return _client(svc, "agent")


def _client(svc: Services, app_name: str) -> WeComClient:
    # Services is an unhashable dataclass, so the cache lives on it rather than in a global dict;
    # it also dies with it (tests build one Services per app).
    cache: dict[str, Any] = svc.__dict__.setdefault("_wecom_clients", {})
    with _factory_lock:
        if app_name not in cache:
            cache[app_name] = _build(svc, app_name, cache)
        return cache[app_name]


def _build(svc: Services, app_name: str, cache: dict[str, Any]) -> WeComClient:
    s = svc.settings
    limiter = cache.get("_limiter")
    if limiter is None:
        # One limiter for both apps: WeCom counts calls per corp, whichever secret made them.
        limiter = RateLimiter(
            svc.redis, svc.clock, s.WECOM_RATE_LIMIT_PER_MINUTE, s.rate_limits, scope=s.WECOM_CORP_ID
        )
        cache["_limiter"] = limiter
    secret = s.WECOM_CONTACT_SECRET if app_name == "contact" else s.WECOM_AGENT_SECRET
    return WeComClient(
        s.WECOM_CORP_ID,
        secret,
        app_name,
        api_base=s.WECOM_API_BASE,
        redis_client=svc.redis,
        limiter=limiter,
        clock=svc.clock,
        timeout=s.WECOM_HTTP_TIMEOUT,
        rate_limit_max_wait=s.WECOM_RATE_LIMIT_MAX_WAIT,
        agent_id=int(s.WECOM_AGENT_ID) if s.WECOM_AGENT_ID.isdigit() else None,
    )

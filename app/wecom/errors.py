"""Errors of the WeCom protocol layer."""

from __future__ import annotations


class CallbackRejected(Exception):
    """A callback we refuse; ``status`` is the HTTP answer, ``reason`` is safe to log."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadSignature(CallbackRejected):
    status = 403


class WrongReceiver(CallbackRejected):
    status = 403


class Undecryptable(CallbackRejected):
    status = 400


class MalformedXml(CallbackRejected):
    status = 400


class PayloadTooLarge(CallbackRejected):
    status = 413


# -- API client errors (app/wecom/client.py) ------------------------------------------------------
# ``retryable`` tells a job what to do: re-raise a retryable error so RQ's Retry runs the job
# later; a non-retryable one is a business answer that another try would only repeat.


class WeComApiFailure(Exception):
    """Base of the API client's errors. Messages never hold the token, the secret or a full URL."""

    retryable = False


class WeComError(WeComApiFailure):
    """WeCom answered with a business errcode (e.g. 41050 welcome code expired): do not retry.

    ``errcode`` is None when the answer was not WeCom JSON at all (an HTTP 4xx, say)."""

    def __init__(self, errcode: int | None, errmsg: str, api: str) -> None:
        super().__init__(f"WeCom {api} failed: errcode={errcode} errmsg={errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api


class WeComUnavailable(WeComApiFailure):
    """WeCom was busy, rate-limited or unreachable after the client's own bounded retries."""

    retryable = True

    def __init__(self, api: str, reason: str, errcode: int | None = None) -> None:
        super().__init__(f"WeCom {api} unavailable: {reason}")
        self.api = api
        self.reason = reason
        self.errcode = errcode


class OutcomeUnknown(WeComUnavailable):
    """A call WeCom may have carried out although no answer came back (a read timeout, a dropped
    connection, HTTP 5xx from a gateway). Raised at once, without the client's own retries, for
    calls that have no dedup handle (``NOT_REPEATABLE`` in app/wecom/client.py): the caller must
    find out what WeCom made (list it) before it calls again."""


class RateLimited(WeComUnavailable):
    """Our own shared rate limiter had no free slot for ``api`` within the allowed wait."""

    def __init__(self, api: str, waited: float, retry_after: float) -> None:
        super().__init__(api, f"local rate limit: waited {waited:.1f}s, next slot in {retry_after:.1f}s")
        self.waited = waited
        self.retry_after = retry_after

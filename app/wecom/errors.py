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

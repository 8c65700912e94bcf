"""Bearer-token auth for the HQ API."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import g, jsonify, request

from app.services import services


def _unauthorized(message: str):
    response = jsonify(error="unauthorized", message=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="dealer-scrm"'
    return response


def require_hq_token(view: Callable[..., Any]) -> Callable[..., Any]:
    """Allow the request only with ``Authorization: Bearer <HQ_API_TOKEN>`` (constant-time compare)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        expected = services().settings.HQ_API_TOKEN
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _unauthorized("send Authorization: Bearer <HQ API token>")
        if not expected or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            return _unauthorized("the token is not valid")
        return view(*args, **kwargs)

    return wrapper


# -- HQ or dealer tokens (campaigns) ----------------------------------------------------------------


@dataclass(frozen=True)
class ApiCaller:
    """Who called: headquarters (``dealer`` None, brand scope) or one dealer (DEALER_API_TOKENS)."""

    dealer: str | None = None

    @property
    def actor(self) -> str:
        return "hq" if self.dealer is None else f"dealer:{self.dealer}"


def require_hq_or_dealer_token(view: Callable[..., Any]) -> Callable[..., Any]:
    """Allow the HQ token or a dealer token; the view finds who in ``flask.g.api_caller``."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = services().settings
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized("send Authorization: Bearer <HQ or dealer API token>")
        caller = None
        if settings.HQ_API_TOKEN and hmac.compare_digest(token.encode(), settings.HQ_API_TOKEN.encode()):
            caller = ApiCaller()
        for known, dealer in settings.dealer_api_tokens.items():  # compare with every one: constant time
            if hmac.compare_digest(token.encode(), known.encode()):
                caller = ApiCaller(dealer)
        if caller is None:
            return _unauthorized("the token is not valid")
        g.api_caller = caller
        return view(*args, **kwargs)

    return wrapper

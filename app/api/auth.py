"""Bearer-token auth for the HQ API."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import jsonify, request

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

"""The handler registry: each WeCom API is a function of one Call, registered with its path and
HTTP method. Handlers run under the state lock and raise ApiError for WeCom's error answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.sandbox.errors import ApiError
from app.sandbox.models import App
from app.sandbox.state import SandboxState


@dataclass(frozen=True)
class Upload:
    """One file of a multipart/form-data request, read before the state lock is taken."""

    filename: str
    content_type: str
    data: bytes
    truncated: bool = False  # longer than the route's ``max_bytes``: ``data`` holds the start


@dataclass
class Call:
    state: SandboxState
    app: App
    args: dict[str, str]
    body: dict[str, Any]
    files: dict[str, Upload] = field(default_factory=dict)  # multipart routes only

    def text(self, name: str, limit: int | None = None, required: bool = True) -> str:
        """A string from the query (GET) or the JSON body (POST)."""
        value = self.body.get(name, self.args.get(name, ""))
        if not isinstance(value, str):
            raise ApiError(40058, f"{name} must be a string")
        if required and not value:
            raise ApiError(40058, f"{name} is required")
        if limit is not None and len(value) > limit:
            raise ApiError(40058, f"{name} is longer than {limit} characters")
        return value

    def strings(self, name: str, limit: int | None = None) -> list[str]:
        value = self.body.get(name) or []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ApiError(40058, f"{name} must be a list of strings")
        if limit is not None and len(value) > limit:
            raise ApiError(40058, f"{name} takes at most {limit} items")
        return value


Handler = Callable[[Call], dict[str, Any]]


@dataclass(frozen=True)
class Route:
    method: str
    handler: Handler
    # A multipart/form-data upload (media/upload) instead of a JSON body: its files are read, at
    # most ``max_bytes`` + 1 bytes each, into Call.files.
    multipart: bool = False
    max_bytes: int = 0


ROUTES: dict[str, Route] = {}


def api(
    path: str, method: str, *, multipart: bool = False, max_bytes: int = 0
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES[path] = Route(method, handler, multipart, max_bytes)
        return handler

    return register


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))

"""Tracked links: a URL sent to a customer (in a quick reply or an SOP step) goes out as
``<PUBLIC_BASE_URL>/r/<token>``; opening it records ``link_opened`` and redirects (see views).

Only http and https targets are accepted, checked when the link is made; the redirect goes to the
stored URL only (nothing in the request can change it), so ``/r/`` is not an open redirect.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.urls import iri_to_uri

from app.store.db import insert_for
from app.store.insight_models import TrackedLink

if TYPE_CHECKING:
    from app.config import Settings

TOKEN_BYTES = 8  # secrets.token_urlsafe(8): 11 characters of A-Z a-z 0-9 _ -
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{10,12}")
MAX_URL = 2048
_ATTEMPTS = 3


class InvalidLink(ValueError):
    """The URL cannot be tracked (not http/https, no host, too long …); the message says why."""


def check_url(url: str) -> str:
    """The URL as it is stored and redirected to (an IRI becomes ASCII: IDNA host, %-escaped
    path and query, as a Location header must be), or InvalidLink if it may not be a target."""
    if not isinstance(url, str) or not url:
        raise InvalidLink("the URL is empty")
    if len(url) > MAX_URL:
        raise InvalidLink(f"the URL is longer than {MAX_URL} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise InvalidLink("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise InvalidLink(f"the URL cannot be parsed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidLink("only http and https URLs can be tracked")
    if not parts.hostname:
        raise InvalidLink("the URL has no host")
    if "@" in parts.netloc:
        raise InvalidLink("the URL must not carry a user name or password")
    try:
        return iri_to_uri(url)
    except (UnicodeError, ValueError) as exc:
        raise InvalidLink(f"the URL cannot be encoded: {exc}") from None


def safe_target(url: str) -> str:
    """The URL without its query and fragment, for logs (queries may hold customer data)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _link_key(url: str, external_userid: str, advisor_userid: str | None, card_id: str | None, step):
    canonical = json.dumps([url, external_userid, advisor_userid, card_id, step], ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()



def make_link(
    session: Session,
    settings: Settings,
    *,
    url: str,
    external_userid: str,
    advisor_userid: str | None = None,
    card_id: str | None = None,
    step_index: int | None = None,
    now: datetime,
    expires_at: datetime | None = None,
) -> str:
    """The public short link for ``url`` sent to ``external_userid``. The same url, customer,
    advisor, card and step get the same token again (a resend is the same link); ``expires_at``
    of the latest call applies (None: never). InvalidLink for a URL that is not http/https."""
    url = check_url(url)
    key = _link_key(url, external_userid, advisor_userid, card_id, step_index)
    for _ in range(_ATTEMPTS):
        stmt = insert_for(session)(TrackedLink).values(
            token=secrets.token_urlsafe(TOKEN_BYTES),
            link_key=key,
            url=url,
            external_userid=external_userid,
            advisor_userid=advisor_userid,
            card_id=card_id,
            step_index=step_index,
            created_at=now,
            expires_at=expires_at,
        )
        session.execute(stmt.on_conflict_do_nothing())  # the same link_key (or, rarely, token)
        token = session.scalar(select(TrackedLink.token).where(TrackedLink.link_key == key))
        if token is not None:
            session.execute(
                update(TrackedLink)
                .where(TrackedLink.token == token, TrackedLink.expires_at.is_distinct_from(expires_at))
                .values(expires_at=expires_at)
                .execution_options(synchronize_session=False)
            )
            return settings.public_url(f"/r/{token}")
    raise RuntimeError("could not store a tracked link (token collisions)")  # pragma: no cover


def find(session: Session, token: str) -> TrackedLink | None:
    """The link of a token; None for anything that is not a stored token."""
    if not TOKEN_PATTERN.fullmatch(token):
        return None
    return session.get(TrackedLink, token)


def open_key(token: str, request_id: str) -> str:
    """Dedup key of one open: every request is its own open (the intent cap bounds their weight)."""
    return f"link_opened:{token}:{request_id}"

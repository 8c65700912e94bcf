"""Reads the HQ interaction feed (GET /api/interactions) the way the brand's CDP does: page after
page with the ``next`` cursor until the feed says it is caught up."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from app.demo.runner import http_session


class FeedError(RuntimeError):
    pass


@dataclass
class FeedRead:
    items: int = 0
    pages: int = 0
    distinct_ids: int = 0
    kinds: Counter[str] = field(default_factory=Counter)


def read_feed(base_url: str, token: str, page_size: int = 100, max_pages: int = 10_000) -> FeedRead:
    result = FeedRead()
    seen: set[int] = set()
    params: dict[str, str] = {"limit": str(page_size)}
    with http_session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        while result.pages < max_pages:
            response = session.get(f"{base_url}/api/interactions", params=params, timeout=10)
            if response.status_code != 200:
                # The body is the API's JSON error; the request (with its token) is not repeated.
                raise FeedError(
                    f"GET /api/interactions answered {response.status_code}: {response.text[:200]}"
                )
            body = response.json()
            result.pages += 1
            for item in body["items"]:
                result.items += 1
                result.kinds[item["kind"]] += 1
                seen.add(item["id"])
            if not body["next"]:
                break
            params["after"] = body["next"]
    result.distinct_ids = len(seen)
    return result

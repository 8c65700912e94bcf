"""GET /api/interactions: the cursor feed of the interaction log, for the brand's CDP."""

from __future__ import annotations

from flask import abort, jsonify, request

from app.api import api
from app.api.auth import require_hq_token
from app.services import services
from app.store import interactions

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@api.get("/interactions")
@require_hq_token
def list_interactions():
    """``?after=<cursor>&limit=<1..1000>``. Items come in commit order; each carries its own
    ``cursor``. ``next`` is the cursor to ask with when the page was full (more may be ready
    now), and null when the feed is caught up: poll again later with the last item's cursor."""
    raw_limit = request.args.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        abort(400, description=f"limit must be a whole number from 1 to {MAX_LIMIT}")
    limit = int(raw_limit)
    after = None
    if request.args.get("after"):
        try:
            after = interactions.Cursor.parse(request.args["after"])
        except ValueError as exc:
            abort(400, description=str(exc))
    with services().sessions() as session:
        rows = interactions.page(session, after, limit)
    items = [interactions.to_json(row) for row in rows]
    next_cursor = items[-1]["cursor"] if len(items) == limit else None
    return jsonify(items=items, next=next_cursor)

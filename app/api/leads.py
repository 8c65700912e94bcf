"""POST /api/leads: lead import (线索导入) from the CDP and lead sources."""

from __future__ import annotations

from flask import abort, jsonify, request

from app.api import api
from app.api.auth import require_hq_token
from app.intake import assign, leads
from app.services import services

MAX_LEADS = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024


@api.post("/leads")
@require_hq_token
def import_leads():
    """Body: ``{"leads": [{...}, ...]}`` (at most 1000) or one lead object. Every lead gets its
    own outcome (created, duplicate or invalid with its errors): bad leads never block good ones."""
    request.max_content_length = MAX_BODY_BYTES  # a larger body is a JSON 413
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        abort(400, description='the body must be a JSON object: {"leads": [...]} or one lead')
    if "leads" in body:
        items = body["leads"]
        if not isinstance(items, list):
            abort(400, description='"leads" must be a list of lead objects')
        if len(items) > MAX_LEADS:
            abort(413, description=f"{len(items)} leads in one request; send at most {MAX_LEADS}")
    else:
        items = [body]
    try:
        report = leads.import_leads(services(), enumerate(items, start=1))
    except assign.AssignmentBusy:
        # The decision lock stayed taken (assign.LOCK_WAIT_SECONDS). Leads stored so far wait as
        # ``new``: sending the same request again finishes them (and the lead sweep would).
        abort(503, description="advisor assignment is busy: send the same request again shortly")
    return jsonify(report.to_json())

"""Customer actions from the CDP/DMS (test drive booked, store visit …) and the intent score.

``POST /api/customers/<external_userid>/actions`` records one action (idempotent by its ``id``)
and answers the customer's score; ``GET /api/customers/<external_userid>/intent`` reads it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import abort, jsonify, request

from app.api import api
from app.api.auth import require_hq_token
from app.insight import intent
from app.services import services
from app.store.models import Advisor, Customer

MAX_ID = 100
MAX_PAYLOAD_BYTES = 4096


@api.post("/customers/<external_userid>/actions")
@require_hq_token
def record_customer_action(external_userid: str):
    """Body ``{"kind": "test_drive_booked", "id": "<source event id>", "occurred_at"?: ISO 8601
    with offset, "advisor"?: userid, "payload"?: {...}}`` → ``{"score", "band", "changed"}``.
    The same ``id`` for the customer again changes nothing. 404 unknown customer, 400 a kind
    without a weight in INTENT_WEIGHTS or another bad field."""
    svc = services()
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        abort(400, description="the body must be a JSON object with kind and id")
    weights = svc.settings.intent_weights
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in weights:
        abort(400, description=f"kind must be one of {', '.join(sorted(weights))}")
    source_id = body.get("id")
    if isinstance(source_id, int) and not isinstance(source_id, bool):
        source_id = str(source_id)
    if not isinstance(source_id, str) or not source_id.strip() or len(source_id) > MAX_ID:
        abort(400, description=f"id (the source's event id, for idempotency) must be 1-{MAX_ID} characters")
    occurred_at = _occurred_at(body.get("occurred_at"))
    advisor = body.get("advisor")
    if advisor is not None and (not isinstance(advisor, str) or not 0 < len(advisor) <= 64):
        abort(400, description="advisor must be an advisor's userid")
    payload = body.get("payload") or {}
    if not isinstance(payload, dict):
        abort(400, description="payload must be a JSON object")
    if len(json.dumps(payload, ensure_ascii=False).encode()) > MAX_PAYLOAD_BYTES:
        abort(400, description=f"payload must be at most {MAX_PAYLOAD_BYTES} bytes of JSON")

    now = svc.clock.now()
    with svc.sessions.begin() as session:
        if session.get(Customer, external_userid) is None:
            abort(404, description=f"no customer {external_userid}")
        dealer = None
        if advisor:
            row = session.get(Advisor, advisor)
            dealer = row.dealer_code if row else None
        change = intent.record_action(
            session,
            external_userid=external_userid,
            kind=kind,
            advisor=advisor,
            dealer=dealer,
            payload={**payload, "source_id": source_id},
            dedup_key=f"action:{external_userid}:{source_id}",
            now=now,
            occurred_at=occurred_at,
            settings=svc.settings,
        )
        state = intent.compute(session, external_userid, svc.settings)
    return jsonify(score=state.score, band=state.band, changed=change is not None)


@api.get("/customers/<external_userid>/intent")
@require_hq_token
def customer_intent(external_userid: str):
    """``{"score", "band", "counts"}`` computed from the interaction log now (counts per weighted
    kind, before caps). 404 unknown customer."""
    svc = services()
    with svc.sessions() as session:
        if session.get(Customer, external_userid) is None:
            abort(404, description=f"no customer {external_userid}")
        state = intent.compute(session, external_userid, svc.settings)
    return jsonify(state.to_json())


def _occurred_at(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        if parsed is not None and parsed.tzinfo is not None:
            parsed.astimezone(UTC)  # the store keeps UTC: a time outside years 1-9999 there is invalid
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        abort(400, description="occurred_at must be ISO 8601 with an offset, e.g. 2026-11-24T10:00:00+08:00")
    return parsed

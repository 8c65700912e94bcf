"""GET /api/contact-way: the advisor a landing-page visitor should add, with that advisor's QR code."""

from __future__ import annotations

import time

import redis
from flask import abort, jsonify, request

from app.api import api
from app.api.auth import require_hq_token
from app.intake import contact_ways
from app.services import services

WAIT_SECONDS = 3.0  # how long a first request waits for the worker to make the code
POLL_SECONDS = 0.05
RETRY_AFTER = 1


@api.get("/contact-way")
@require_hq_token
def contact_way():
    """``?dealer=SH01&model=RAV4&channel=lp`` (or ``city=`` instead of dealer). 200 with the
    advisor, state and QR code; 202 ``{"status": "pending"}`` with Retry-After while the code is
    still being made; 400 for an unknown dealer, model, city or channel; 409 when no advisor in the
    territory can take a customer now."""
    svc = services()
    args = request.args
    try:
        choice = contact_ways.choose(
            svc,
            channel=(args.get("channel") or "lp").strip(),
            dealer=(args.get("dealer") or "").strip() or None,
            model=(args.get("model") or "").strip() or None,
            city=(args.get("city") or "").strip() or None,
        )
    except contact_ways.InvalidRequest as exc:
        abort(400, description=str(exc))
    except contact_ways.NoAdvisor as exc:
        abort(409, description=f"no advisor can take a customer now: {exc}")

    way = _stored(svc, choice)
    if way is None:
        try:
            contact_ways.request_creation(svc, choice.advisor, choice.state)
        except redis.RedisError:
            abort(503, description="the QR code cannot be made now; try again later")
        deadline = time.monotonic() + WAIT_SECONDS
        while way is None and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            way = _stored(svc, choice)
    if way is None:
        response = jsonify(status="pending", retry_after=RETRY_AFTER)
        response.status_code = 202
        response.headers["Retry-After"] = str(RETRY_AFTER)
        return response
    return jsonify(
        advisor={"userid": choice.advisor, "name": choice.advisor_name},
        dealer=choice.dealer,
        state=choice.state,
        config_id=way.config_id,
        qr_code=way.qr_code,
        explanation=choice.explanation,
    )


def _stored(svc, choice: contact_ways.Choice):
    with svc.sessions() as session:
        return contact_ways.find(session, choice.advisor, choice.state)

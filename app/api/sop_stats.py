"""GET /api/sop/stats: SOP card analytics per card and step, for headquarters."""

from __future__ import annotations

from flask import abort, jsonify, request

from app.api import api
from app.api.auth import require_hq_token
from app.services import services
from app.sop import stats


@api.get("/sop/stats")
@require_hq_token
def sop_stats():
    """``?card=<card id>`` (optional) → ``{"generated_at", "cards": [{"card_id", "title",
    "version", "enrolled", "active", "completed", "exited", "due", "reminded", "replies_sent",
    "stage_reached", "stage_reached_by_stage", "exit_reasons", "steps": [{"index", "at",
    "waiting", "due", "ran", "reminded", "skipped", "replies_sent", "links_opened",
    "answers_given", "stage_reached", "dropped"}]}]}`` (app/sop/stats.py says what each counts).
    404 for a card that is neither loaded nor enrolled."""
    svc = services()
    card = request.args.get("card") or None
    with svc.sessions() as session:
        data = stats.card_stats(session, svc.clock.now(), card)
    if card and not data["cards"]:
        abort(404, description=f"no SOP card {card!r}")
    return jsonify(data)

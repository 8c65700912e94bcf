"""Campaigns (tagged mass sends, issue #5): create (or dry-run), read, schedule, cancel.

HQ token: brand scope, any dealer. Dealer token (DEALER_API_TOKENS): its own dealer only (see
app/campaigns/store.py); another dealer's campaign is a 404 to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import abort, g, jsonify, request
from pydantic import ValidationError

from app.api import api
from app.api.auth import require_hq_or_dealer_token
from app.campaigns import progress, results, states, store
from app.campaigns.model import CampaignSpec, spec_errors
from app.services import Services, services
from app.store.campaign_models import Campaign

MAX_BODY_BYTES = 256 * 1024


def _flag(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true", "yes")


def _error(status: int, error: str, message: str, **extra):
    response = jsonify(error=error, message=message, **extra)
    response.status_code = status
    return response


@api.post("/campaigns")
@require_hq_or_dealer_token
def create_campaign():
    """Body: the campaign spec (app/campaigns/model.py). ``?dry_run=1``: the audience figures
    only, nothing stored (200). ``?draft=1``: stored as a draft. Otherwise stored as scheduled
    (201, the campaign as ``GET`` answers it). 400 invalid spec (``errors``; ``column`` for the
    filter), 403 a dealer token reaching beyond its dealer."""
    request.max_content_length = MAX_BODY_BYTES
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        abort(400, description="the body must be a JSON object: the campaign spec")
    try:
        spec = CampaignSpec.model_validate(body)
    except ValidationError as exc:
        errors = spec_errors(exc)
        return _error(400, "invalid_campaign", errors[0], errors=errors)
    svc = services()
    caller = g.api_caller
    now = svc.clock.now()
    with svc.sessions() as session:
        try:
            made = store.plan(
                session, spec, actor_dealer=caller.dealer, now=now, band_floors=svc.settings.intent_bands
            )
        except store.ScopeError as exc:
            return _error(403, "forbidden", str(exc))
        except store.SpecError as exc:
            return _error(400, "invalid_campaign", str(exc), errors=[str(exc)], column=exc.column)
        if _flag("dry_run"):
            return jsonify(
                dry_run=True,
                scope={"dealer": made.scope_dealer},
                send_at=made.send_at.isoformat(),
                audience=made.counts.to_json(),
            )
        campaign = store.create(session, made, actor_dealer=caller.dealer, now=now, draft=_flag("draft"))
        session.commit()
        response = jsonify(_with_progress(session, campaign))
    response.status_code = 201
    response.headers["Location"] = f"/api/campaigns/{campaign.id}"
    return response


def _campaign(session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if not store.visible(campaign, g.api_caller.dealer):
        abort(404, description=f"no campaign {campaign_id}")
    return campaign


@api.get("/campaigns/<int(max=9223372036854775807):campaign_id>")
@require_hq_or_dealer_token
def get_campaign(campaign_id: int):
    """``{id, name, state, scope, created_by, send_at, content, filter, audience: {total,
    by_dealer, by_advisor, counted_at, source}, history: [{from, to, by, reason, at}], progress}``;
    ``progress`` (null before the submission started): app/campaigns/progress.py's figures."""
    with services().sessions() as session:
        return jsonify(_with_progress(session, _campaign(session, campaign_id)))


def _with_progress(session, campaign: Campaign) -> dict:
    return {**store.to_json(session, campaign), "progress": progress.figures(session, campaign.id)}


def _change(
    campaign_id: int,
    apply: Callable[..., Any],
    after: Callable[[Services, Any], None] | None = None,
):
    """A state change the caller asked for: the optional ``{"reason": …}`` of the body, 403 for
    another dealer's campaign, ``apply(session, actor=, now=, reason=)`` in one transaction (409
    on StateConflict), then ``after(svc, what apply returned)`` once it is committed."""
    svc = services()
    caller = g.api_caller
    body = request.get_json(force=True, silent=True) or {}
    reason = body.get("reason") if isinstance(body, dict) and isinstance(body.get("reason"), str) else None
    with svc.sessions() as session:
        campaign = _campaign(session, campaign_id)
        if not store.may_change(campaign, caller.dealer):
            return _error(403, "forbidden", f"campaign {campaign_id} was made by {campaign.created_by}")
        try:
            outcome = apply(session, actor=caller.actor, now=svc.clock.now(), reason=reason)
        except states.StateConflict as exc:
            return _error(409, "conflict", str(exc), state=exc.current)
        session.commit()
        if after is not None:
            after(svc, outcome)
        return jsonify(_with_progress(session, session.get(Campaign, campaign_id)))


def _move(campaign_id: int, sources: tuple[str, ...], target: str):
    def move(session, **who: Any) -> None:
        states.move(session, campaign_id, sources, target, **who)

    return _change(campaign_id, move)


@api.post("/campaigns/<int(max=9223372036854775807):campaign_id>/cancel")
@require_hq_or_dealer_token
def cancel_campaign(campaign_id: int):
    """Draft, scheduled, submitting or waiting → cancelled (body ``{"reason": …}`` optional); 409
    from done / cancelled. Once handed to WeCom, a job cancels the advisors' open tasks."""

    def cancel_open_tasks(svc: Services, left: str) -> None:
        if left in (states.SUBMITTING, states.WAITING):
            from workers.campaign_jobs import enqueue_cancel

            enqueue_cancel(svc, campaign_id)

    mark = results.mark_cancelled
    return _change(campaign_id, lambda session, **who: mark(session, campaign_id, **who), cancel_open_tasks)


@api.post("/campaigns/<int(max=9223372036854775807):campaign_id>/schedule")
@require_hq_or_dealer_token
def schedule_campaign(campaign_id: int):
    """Draft → scheduled (sent at its ``send_at``, or now if that has passed); 409 otherwise."""
    return _move(campaign_id, (states.DRAFT,), states.SCHEDULED)

"""Jobs of the lead import: the card that tells an advisor about a new lead, and the sweep that
finishes imports a crash cut short (app/intake/lead_recovery.py)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from app.intake import lead_recovery, leads
from app.intake.notify import send_card
from app.services import Services, services
from app.store import effects, interactions
from app.store.interactions import NewInteraction
from app.store.models import Lead
from workers.appcontext import app_context
from workers.periodic import claim_period

log = logging.getLogger(__name__)

SWEEP_LOCK_KEY = "scrm:lead-sweep:lock"


def notify_lead_advisor(lead_id: int) -> str:
    """Send the lead's advisor a textcard (once: effects ledger key ``lead-card:<id>``, and
    WeCom's duplicate check for a run that dies between the send and the ledger write), then
    record the ``lead_card_sent`` interaction."""
    with app_context():
        svc = services()
        with svc.sessions() as session:
            lead = session.get(Lead, lead_id)
            assignment = leads.assignment_for(session, lead_id)
        if lead is None or not lead.advisor_userid:
            log.info("lead %s: no advisor to tell", lead_id)
            return "no advisor"
        advisor = lead.advisor_userid
        explanation = assignment.explanation if assignment is not None else {}
        content = leads.card(svc.settings, lead, explanation)

        def send() -> dict[str, Any]:
            answer = send_card(svc, [advisor], content.title, content.description, content.url)
            return {
                "advisor": advisor,
                "msgid": answer.get("msgid"),
                "invaliduser": answer.get("invaliduser"),
                "sent_at": svc.clock.now().isoformat(),
            }

        result, sent_now = effects.once(svc.sessions, leads.card_effect_key(lead_id), svc.clock.now(), send)
        if result.get("invaliduser"):
            log.warning("lead %s: WeCom did not deliver the card to %s", lead_id, result["invaliduser"])
        now = svc.clock.now()
        sent_at = datetime.fromisoformat(result["sent_at"]) if result.get("sent_at") else now
        with svc.sessions.begin() as session:
            interactions.append(
                session,
                [
                    NewInteraction(
                        kind="lead_card_sent",
                        occurred_at=sent_at,
                        dedup_key=f"lead:{lead_id}:card",
                        advisor_userid=result.get("advisor") or advisor,
                        dealer_code=lead.dealer_code,
                        payload={"lead_id": lead_id, "msgid": result.get("msgid")},
                    )
                ],
                now,
            )
        return "sent" if sent_now else "already sent"


def sweep_if_due(svc: Services) -> lead_recovery.LeadSweepResult | None:
    """The lead sweep, unless another worker ran it within INBOX_SWEEP_INTERVAL."""
    if not claim_period(svc, SWEEP_LOCK_KEY, svc.settings.INBOX_SWEEP_INTERVAL):
        return None
    result = lead_recovery.sweep(svc)
    if result.assigned or result.cards_enqueued:
        log.warning("lead sweep: %s", result)
    return result

"""The lead sweep: finishes imports that a crash cut short, so no lead waits for a re-import.

A lead is committed before it is assigned, and its advisor's card is enqueued after the
assignment commits (app/intake/leads.py). A process that dies between those steps leaves either
a lead still ``new`` (no advisor yet) or an assigned lead whose card job never reached Redis.
Workers run this sweep in their maintenance step (workers/lead_jobs.py ``sweep_if_due``, at
most once per INBOX_SWEEP_INTERVAL across all workers):

- a ``new`` lead older than INBOX_SWEEP_GRACE is assigned (``assign_lead``: the same stable
  decision, assignment row, interactions and card as an import);
- an assigned or linked lead with no card in the effects ledger and no card job known to Redis
  gets its card job again (``ensure_card``).

Both are safe to repeat: the decision and the card are kept in the effects ledger. Only leads
created within ``WINDOW`` are looked at: a card about a lead older than that is news to nobody,
and the bound keeps each sweep an index range scan however many leads the store has.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, and_, cast, literal, or_, select

from app.intake.leads import assign_lead, card_effect_key, ensure_card
from app.services import Services
from app.store.models import Effect, Lead, LeadStatus

WINDOW = timedelta(days=3)


@dataclass
class LeadSweepResult:
    assigned: int = 0
    cards_enqueued: int = 0

    def __str__(self) -> str:
        return f"assigned {self.assigned} unfinished leads, re-enqueued {self.cards_enqueued} cards"


def unfinished_leads(svc: Services, now: datetime, *, after_id: int = 0, limit: int = 500) -> list[Lead]:
    """Leads created in [now - WINDOW, now - grace] that are still ``new``, or assigned with no
    card in the ledger. The card test is an anti-join on the ledger key ``lead-card:<id>``."""
    grace = timedelta(seconds=svc.settings.INBOX_SWEEP_GRACE)
    card_key = literal(card_effect_key(0)[:-1], String) + cast(Lead.id, String)
    stmt = (
        select(Lead)
        .outerjoin(Effect, Effect.key == card_key)
        .where(
            Lead.created_at >= now - WINDOW,
            Lead.created_at <= now - grace,
            Lead.id > after_id,
            or_(
                Lead.status == LeadStatus.NEW,
                and_(
                    Lead.status.in_([LeadStatus.ASSIGNED, LeadStatus.LINKED]),
                    Lead.advisor_userid.is_not(None),
                    Effect.key.is_(None),
                ),
            ),
        )
        .order_by(Lead.id)
        .limit(limit)
    )
    with svc.sessions() as session:
        leads = list(session.scalars(stmt))
        session.expunge_all()
    return leads


def sweep(svc: Services, *, batch: int = 500) -> LeadSweepResult:
    """One pass over the window."""
    result = LeadSweepResult()
    now = svc.clock.now()
    last_id = 0
    while True:
        leads = unfinished_leads(svc, now, after_id=last_id, limit=batch)
        for lead in leads:
            last_id = lead.id
            if lead.status == LeadStatus.NEW:
                assign_lead(svc, lead.id)  # enqueues the card when it finds an advisor
                result.assigned += 1
            elif ensure_card(svc, lead):
                result.cards_enqueued += 1
        if len(leads) < batch:
            return result

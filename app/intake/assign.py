"""Assignment: the roster from the store, advisors' load, one stable decision per subject, and
the assignment row that keeps the engine's explanation.

The engine (app/intake/matching.py) is pure; this module is what feeds it. A decision is written
to the effects ledger under the subject's key the first time it is made, so a job that runs again
(or two jobs for the same customer) hands the customer to the same advisor.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.intake import matching
from app.services import Services
from app.store import effects
from app.store.db import insert_for
from app.store.models import Advisor, Assignment, Dealer, Lead, LeadStatus

CHINA = ZoneInfo("Asia/Shanghai")
ROSTER_CHECK_SECONDS = 5.0  # how stale a process's roster may be after `scrm roster import`
# Assignments that did not give the advisor a customer do not count towards today's load, nor
# does the add that fulfils a lead ("linked"): the lead's own assignment already counted it.
_NOT_LOAD = ("failed", "unassigned", "linked")


@dataclass(frozen=True)
class Decision:
    """Who gets the subject, and why (``explanation`` is Match.explain(): stored and shown)."""

    advisor: str | None
    dealer: str | None
    score: float | None
    explanation: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "advisor": self.advisor,
            "dealer": self.dealer,
            "score": self.score,
            "explanation": self.explanation,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        return cls(data.get("advisor"), data.get("dealer"), data.get("score"), data.get("explanation") or {})

    @classmethod
    def of(cls, match: matching.Match) -> Decision:
        chosen = match.chosen
        return cls(
            advisor=chosen.userid if chosen else None,
            dealer=chosen.dealer_code if chosen else None,
            score=round(chosen.total, 4) if chosen else None,
            explanation=match.explain(),
        )


# -- the roster, cached per process ---------------------------------------------------------------


class RosterCache:
    """The engine's Roster built from the store, rebuilt when the roster tables change (checked
    at most every ROSTER_CHECK_SECONDS): 20,000 advisors are read once, not per event."""

    def __init__(self, weights: matching.Weights | None = None) -> None:
        self.weights = weights
        self._lock = threading.Lock()
        self._roster: matching.Roster | None = None
        self._version: tuple[Any, ...] | None = None
        self._checked_at = float("-inf")

    def get(self, svc: Services) -> matching.Roster:
        now = svc.clock.time()
        with self._lock:
            if self._roster is not None and now - self._checked_at < ROSTER_CHECK_SECONDS:
                return self._roster
            with svc.sessions() as session:
                version = _roster_version(session)
                if self._roster is None or version != self._version:
                    self._roster = load_roster(session, self.weights)
                    self._version = version
            self._checked_at = now
            return self._roster


def _roster_version(session: Session) -> tuple[Any, ...]:
    # Counting active advisors too: a deactivation within the same second as the last change
    # leaves max(updated_at) where it was.
    advisors = session.execute(
        select(func.count(), func.max(Advisor.updated_at), func.count().filter(Advisor.active))
    ).one()
    dealers = session.execute(select(func.count(), func.max(Dealer.updated_at))).one()
    return (*advisors, *dealers)


def load_roster(session: Session, weights: matching.Weights | None = None) -> matching.Roster:
    dealers = [
        matching.Dealer(
            code=d.code,
            name=d.name,
            region=d.region,
            city=d.city,
            lat=d.lat,
            lon=d.lon,
            models=frozenset(d.models),
            territory=frozenset(d.territory),
        )
        for d in session.scalars(select(Dealer))
    ]
    advisors = [
        matching.Advisor(
            userid=a.userid,
            dealer_code=a.dealer_code,
            active=a.active,
            capacity_per_day=a.capacity_per_day,
            max_open_leads=a.max_open_leads,
            models=frozenset(a.models),
            languages=frozenset(a.languages),
            segments=frozenset(a.segments),
            personas=frozenset(a.personas),
            seniority=a.seniority,
            acceptance_rate=a.acceptance_rate,
            median_first_response_s=a.median_first_response_s,
        )
        for a in session.scalars(select(Advisor))
    ]
    return matching.Roster(dealers, advisors, weights)


def roster_cache(svc: Services) -> RosterCache:
    """The process's roster cache for these services (kept on the Services object)."""
    cache = svc.__dict__.get("_roster_cache")
    if cache is None:
        cache = svc.__dict__.setdefault("_roster_cache", RosterCache())
    return cache


# -- load -----------------------------------------------------------------------------------------


def start_of_day(now: datetime) -> datetime:
    """Midnight in China, where dealers' days begin, as an aware datetime."""
    local = now.astimezone(CHINA)
    return datetime.combine(local.date(), time(0), CHINA)


def loads(session: Session, userids: list[str], now: datetime) -> dict[str, matching.Load]:
    if not userids:
        return {}
    today = start_of_day(now)
    assigned = dict(
        session.execute(
            select(Assignment.advisor_userid, func.count())
            .where(
                Assignment.advisor_userid.in_(userids),
                Assignment.created_at >= today,
                Assignment.created_at < today + timedelta(days=1),
                Assignment.status.not_in(_NOT_LOAD),
            )
            .group_by(Assignment.advisor_userid)
        ).all()
    )
    open_leads = dict(
        session.execute(
            select(Lead.advisor_userid, func.count())
            .where(Lead.advisor_userid.in_(userids), Lead.status == LeadStatus.ASSIGNED)
            .group_by(Lead.advisor_userid)
        ).all()
    )
    return {
        userid: matching.Load(assigned_today=assigned.get(userid, 0), open_leads=open_leads.get(userid, 0))
        for userid in set(assigned) | set(open_leads)
    }


# -- decide and record ----------------------------------------------------------------------------


def decide(
    svc: Services, key: str, customer: matching.Customer, exclude: dict[str, str] | None = None
) -> Decision:
    """The advisor for the subject ``key`` (e.g. ``customer:<external_userid>``, ``lead:<id>``).
    Made once: later calls with the same key return the first decision."""

    def compute() -> dict[str, Any]:
        roster = roster_cache(svc).get(svc)
        with svc.sessions() as session:
            current = loads(session, roster.candidates(customer), svc.clock.now())
        return Decision.of(roster.match(customer, current, exclude=exclude)).to_json()

    result, _ = effects.once(svc.sessions, f"assign:{key}", svc.clock.now(), compute)
    return Decision.from_json(result)


def record(
    session: Session,
    key: str,
    decision: Decision,
    *,
    reason: str,
    status: str,
    now: datetime,
    external_userid: str | None = None,
    lead_id: int | None = None,
) -> None:
    """Write the assignment row (once per key; a second call changes nothing)."""
    insert = insert_for(session)
    session.execute(
        insert(Assignment)
        .values(
            dedup_key=key,
            external_userid=external_userid,
            lead_id=lead_id,
            advisor_userid=decision.advisor,
            dealer_code=decision.dealer,
            reason=reason,
            status=status if decision.advisor else "unassigned",
            score=decision.score,
            explanation=decision.explanation,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[Assignment.dedup_key])
    )


def set_status(session: Session, key: str, status: str, now: datetime) -> None:
    session.execute(
        Assignment.__table__.update().where(Assignment.dedup_key == key).values(status=status, updated_at=now)
    )

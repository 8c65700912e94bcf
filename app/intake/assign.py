"""Assignment: the roster from the store, advisors' load, one stable decision per subject, and
the assignment row that keeps the engine's explanation.

The engine (app/intake/matching.py) is pure; this module is what feeds it. A decision is written
to the effects ledger under the subject's key the first time it is made, so a job that runs again
(or two jobs for the same customer) hands the customer to the same advisor.

A batch of subjects (a lead import's chunk) is decided in memory with a ``LoadBook``: today's load
of every advisor the batch may go to is read once and counted up as each decision is made, so the
batch gets the decisions that deciding and recording its subjects one at a time would give.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
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
_LOAD_QUERY_ADVISORS = 2000  # advisors per load query: well under any driver's bound-parameter limit


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

    result, _ = effects.once(svc.sessions, ledger_key(key), svc.clock.now(), compute)
    return Decision.from_json(result)


def ledger_key(key: str) -> str:
    """The effects-ledger key of the decision about the subject ``key``."""
    return f"assign:{key}"


class LoadBook:
    """Today's load of the advisors a batch of subjects may go to, read once (``read``) and
    counted up in memory as the batch is decided in order: a subject decided here sees every
    earlier decision of the batch in its advisors' load, as it would had each been recorded
    before the next was made, so capacity_per_day and max_open_leads hold within the batch.
    Decisions are not written anywhere: the caller keeps them (``keep_decisions``)."""

    def __init__(self, roster: matching.Roster, current: Mapping[str, matching.Load]) -> None:
        self.roster = roster
        self.current = dict(current)

    @classmethod
    def read(cls, svc: Services, customers: Sequence[matching.Customer], now: datetime) -> LoadBook:
        roster = roster_cache(svc).get(svc)
        userids = sorted({userid for customer in customers for userid in roster.candidates(customer)})
        current: dict[str, matching.Load] = {}
        with svc.sessions() as session:
            for start in range(0, len(userids), _LOAD_QUERY_ADVISORS):
                current.update(loads(session, userids[start : start + _LOAD_QUERY_ADVISORS], now))
        return cls(roster, current)

    def decide(self, customer: matching.Customer, *, opens_lead: bool = True) -> Decision:
        """The engine's choice for the customer under the load so far; counted at once."""
        decision = Decision.of(self.roster.match(customer, self.current))
        self.count(decision, opens_lead=opens_lead)
        return decision

    def count(self, decision: Decision, *, opens_lead: bool = True) -> None:
        """Add a decision made elsewhere (e.g. found in the ledger) to its advisor's load: one
        assignment today and, for a lead, one open lead."""
        if decision.advisor is None:
            return
        load = self.current.get(decision.advisor, matching.Load())
        self.current[decision.advisor] = matching.Load(
            load.assigned_today + 1, load.open_leads + (1 if opens_lead else 0)
        )


def recorded_decisions(session: Session, keys: Sequence[str]) -> dict[str, Decision]:
    """The decisions already in the ledger for these subject keys (one query)."""
    found = effects.recorded_many(session, [ledger_key(key) for key in keys])
    return {key: Decision.from_json(found[ledger_key(key)]) for key in keys if ledger_key(key) in found}


def keep_decisions(session: Session, decisions: Mapping[str, Decision], now: datetime) -> dict[str, Decision]:
    """Write decisions to the ledger in the caller's transaction, so they commit together with
    the rows that act on them. First writer wins: for a subject another process decided first,
    its decision is returned instead of ours."""
    stored = effects.record_many(
        session, {ledger_key(key): decision.to_json() for key, decision in decisions.items()}, now
    )
    return {key: Decision.from_json(stored[ledger_key(key)]) for key in decisions}


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
    row = assignment_row(
        key, decision, reason=reason, status=status, now=now, external_userid=external_userid, lead_id=lead_id
    )
    record_rows(session, [row])


def assignment_row(
    key: str,
    decision: Decision,
    *,
    reason: str,
    status: str,
    now: datetime,
    external_userid: str | None = None,
    lead_id: int | None = None,
) -> dict[str, Any]:
    """The assignment row ``record`` writes, for ``record_rows``."""
    return {
        "dedup_key": key,
        "external_userid": external_userid,
        "lead_id": lead_id,
        "advisor_userid": decision.advisor,
        "dealer_code": decision.dealer,
        "reason": reason,
        "status": status if decision.advisor else "unassigned",
        "score": decision.score,
        "explanation": decision.explanation,
        "created_at": now,
        "updated_at": now,
    }


def record_rows(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Write assignment rows (``assignment_row``) in one statement; a key already there is left
    as it is."""
    if not rows:
        return
    table = Assignment.__table__
    insert = insert_for(session)(table).on_conflict_do_nothing(index_elements=[table.c.dedup_key])
    session.execute(insert, list(rows))


def set_status(session: Session, key: str, status: str, now: datetime) -> None:
    session.execute(
        Assignment.__table__.update().where(Assignment.dedup_key == key).values(status=status, updated_at=now)
    )

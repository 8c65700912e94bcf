"""Assignment: the roster from the store, advisors' load, one stable decision per subject, and
the assignment row that keeps the engine's explanation.

The engine (app/intake/matching.py) is pure; this module is what feeds it. A decision is written
to the effects ledger under the subject's key the first time it is made, so a job that runs again
(or two jobs for the same customer) hands the customer to the same advisor.

A batch of subjects (a lead import's chunk) is decided in memory with a ``LoadBook``: today's load
of every advisor the batch may go to is read once and counted up as each decision is made, so the
batch gets the decisions that deciding and recording its subjects one at a time would give.

capacity_per_day and max_open_leads hold exactly across processes (web imports, every worker,
the lead sweep), for two reasons:

- Reading the load, deciding and committing the decision is one critical section, serialized by
  a Redis lock (``decision_lock``, ``LOCK_NAME``): two deciders can no longer both read the same
  load and both give away an advisor's last place. It is held for database work only, never
  across a WeCom call; once per ``decide`` and once per lead-import chunk.
- A decision counts as load from the moment it is in the ledger (``loads``), not only once its
  assignment row is written: a shared-code add records its row seconds later, after the WeCom
  calls. The ledger key is ``assign:<subject key>`` and the row's dedup_key the subject key, so
  a decision is counted by its ledger entry until its row exists, then by the row: never twice.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.exceptions import LockError
from sqlalchemy import BindParameter, Integer, bindparam, case, exists, func, literal, select, union_all
from sqlalchemy.orm import Session

from app.config import Settings
from app.intake import matching
from app.services import Services
from app.store import effects
from app.store.db import insert_for
from app.store.models import Advisor, Assignment, Dealer, Effect, Lead, LeadStatus

log = logging.getLogger(__name__)

CHINA = ZoneInfo("Asia/Shanghai")
ROSTER_CHECK_SECONDS = 5.0  # how stale a process's roster may be after `scrm roster import`
# Assignments that did not give the advisor a customer do not count towards today's load, nor
# does the add that fulfils a lead ("linked"): the lead's own assignment already counted it, nor
# an add the advisor has not confirmed ("unconfirmed"): its confirming add counts it.
NOT_LOAD = ("failed", "unassigned", "linked", "unconfirmed")
# Advisors per load query, whose three IN lists (plus a batch's up to CHUNK subject keys) stay
# well under any driver's bound-parameter limit (SQLite 32,766; PostgreSQL 65,535).
_LOAD_QUERY_ADVISORS = 2000
LEDGER_PREFIX = "assign:"  # a decision's ledger key: the prefix, then the subject key (its row's dedup_key)
_LEAD_LEDGER_PREFIX = LEDGER_PREFIX + "lead:"  # a lead's decision also opens a lead

LOCK_NAME = "scrm:assign:lock"
# The section under the lock is a few queries (a lead chunk's: well under a second). The lock
# expires on its own after LOCK_TTL_SECONDS, so a holder that dies (killed worker, lost
# connection) blocks the others for at most that long; it is far above any healthy section.
LOCK_TTL_SECONDS = 30.0
# How long a decider waits for the lock before giving up with AssignmentBusy: longer than a
# queue of healthy sections, shorter than a job's timeout, so a stuck lock fails the job (and RQ
# retries it later) instead of hanging it.
LOCK_WAIT_SECONDS = 10.0
_LOCK_POLL_SECONDS = 0.005  # sections take milliseconds: redis-py's default 0.1 s poll would idle


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


def pending_window(settings: Settings) -> timedelta:
    """How long a decision may wait in the ledger for its assignment row: the job that made it
    writes the row in the same run (seconds after, past the WeCom calls) or in one of its
    retries, so at most every retry interval plus every attempt's time limit."""
    attempts = 1 + len(settings.retry_intervals)
    return timedelta(seconds=sum(settings.retry_intervals) + attempts * settings.JOB_TIMEOUT)


def loads(
    session: Session,
    userids: list[str],
    now: datetime,
    *,
    uncounted: Collection[str] = (),
    pending_for: timedelta | None = None,
) -> dict[str, matching.Load]:
    """Today's load of these advisors (one query): assignments today (China day, ``NOT_LOAD``
    statuses aside) and open leads, each plus the decisions in the ledger today whose assignment
    row is not written yet (a lead's decision also opens a lead, as ``LoadBook.count`` has it).
    ``uncounted``: subject keys whose ledger decisions the caller counts itself (a batch's own
    subjects, ``LoadBook.read``), left out here so they are not counted twice.
    ``pending_for`` (``pending_window``): only decisions this recent can still be waiting for
    their row; older ones whose row never came belong to a job that gave up. Without it the
    query reads all of today's ledger, which on a busy day is 200,000 rows and 45 ms (under the
    decision lock); with it, the last hour's."""
    if not userids:
        return {}
    today = start_of_day(now)
    params = {
        "userids": list(userids),
        "today": today,
        "tomorrow": today + timedelta(days=1),
        "pending_since": today if pending_for is None else max(today, now - pending_for),
        "uncounted": [ledger_key(key) for key in uncounted],
    }
    return {
        userid: matching.Load(assigned_today=int(assigned_today), open_leads=int(opens))
        for userid, assigned_today, opens in session.execute(_load_statement(), params)
    }


def _one(value: int):
    return literal(value, Integer)


@functools.cache
def _load_statement():
    """Built once: every decision runs it (under the decision lock), and building and hashing
    this union anew cost more than running it (bench/leads.py, one lead at a time)."""
    userids = bindparam("userids", expanding=True)
    today, tomorrow = bindparam("today"), bindparam("tomorrow")
    assigned = select(
        Assignment.advisor_userid.label("advisor"), _one(1).label("assigned"), _one(0).label("opens")
    ).where(
        Assignment.advisor_userid.in_(userids),
        Assignment.created_at >= today,
        Assignment.created_at < tomorrow,
        Assignment.status.not_in(NOT_LOAD),
    )
    open_leads = select(Lead.advisor_userid, _one(0), _one(1)).where(
        Lead.advisor_userid.in_(userids), Lead.status == LeadStatus.ASSIGNED
    )
    parts = union_all(assigned, open_leads, _pending(userids, tomorrow)).subquery()
    totals = select(parts.c.advisor, func.sum(parts.c.assigned), func.sum(parts.c.opens))
    return totals.group_by(parts.c.advisor)


def _pending(userids: BindParameter, tomorrow: BindParameter):
    """(advisor, 1, opens a lead) for each decision kept in the ledger since ``pending_since``
    whose assignment row does not exist yet: decided, so the advisor's place is taken, but not
    yet recorded (a shared-code add writes its row after the WeCom calls; an import or the lead
    sweep that died between the two). Once the row is written the row counts instead. Ledger
    keys in ``uncounted`` are left out (their batch counts them)."""
    advisor = Effect.result["advisor"].as_string()
    subject = func.substr(Effect.key, len(LEDGER_PREFIX) + 1)  # the row's dedup_key
    opens = case((Effect.key.like(_LEAD_LEDGER_PREFIX + "%"), 1), else_=0)
    return select(advisor, _one(1), opens).where(
        Effect.created_at >= bindparam("pending_since"),  # ix_effects_created_at: the recent ledger
        Effect.created_at < tomorrow,
        Effect.key.like(LEDGER_PREFIX + "%"),
        advisor.in_(userids),
        Effect.key.not_in(bindparam("uncounted", expanding=True)),
        ~exists().where(Assignment.dedup_key == subject),
    )


# -- decide and record ----------------------------------------------------------------------------


def decide(
    svc: Services, key: str, customer: matching.Customer, exclude: dict[str, str] | None = None
) -> Decision:
    """The advisor for the subject ``key`` (e.g. ``customer:<external_userid>``, ``lead:<id>``).
    Made once: later calls with the same key return the first decision. A new decision is made
    and committed under ``decision_lock`` (raises AssignmentBusy when it cannot be had)."""
    found = effects.recorded(svc.sessions, ledger_key(key))
    if found is not None:  # decided before: no lock needed
        return Decision.from_json(found)
    roster = roster_cache(svc).get(svc)  # outside the lock: a rebuild reads the whole roster

    def compute() -> dict[str, Any]:
        with svc.sessions() as session:
            window = pending_window(svc.settings)
            current = loads(session, roster.candidates(customer), svc.clock.now(), pending_for=window)
        return Decision.of(roster.match(customer, current, exclude=exclude)).to_json()

    with decision_lock(svc):
        # ``once`` looks in the ledger again: another process may have decided meanwhile.
        result, _ = effects.once(svc.sessions, ledger_key(key), svc.clock.now(), compute)
    return Decision.from_json(result)


def ledger_key(key: str) -> str:
    """The effects-ledger key of the decision about the subject ``key``."""
    return f"{LEDGER_PREFIX}{key}"


class AssignmentBusy(RuntimeError):
    """The decision lock could not be had within LOCK_WAIT_SECONDS. Nothing was decided: a
    worker job lets it propagate so RQ retries the job later (the lock will have been released,
    or have expired); a lead import leaves its leads ``new`` for the next import or the sweep."""


@contextmanager
def decision_lock(svc: Services) -> Iterator[None]:
    """Hold the cross-process lock around reading load, deciding and committing the decisions
    (database work only: never hold it across a WeCom call). Not reentrant."""
    lock = svc.redis.lock(
        LOCK_NAME,
        timeout=LOCK_TTL_SECONDS,
        sleep=_LOCK_POLL_SECONDS,
        blocking_timeout=LOCK_WAIT_SECONDS,
    )
    if not lock.acquire():
        raise AssignmentBusy(f"{LOCK_NAME} not free after {LOCK_WAIT_SECONDS:g} s")
    try:
        yield
    finally:
        try:
            lock.release()
        except LockError:
            # The section outlived LOCK_TTL_SECONDS and the lock expired under it: another
            # decider may have run alongside. What was committed stands; say so loudly.
            log.warning(
                "%s expired before its holder released it (section > %g s)", LOCK_NAME, LOCK_TTL_SECONDS
            )


class LoadBook:
    """Today's load of the advisors a batch of subjects may go to, read once (``read``) and
    counted up in memory as the batch is decided in order: a subject decided here sees every
    earlier decision of the batch in its advisors' load, as it would had each been recorded
    before the next was made. Decisions are not written anywhere: the caller keeps them
    (``keep_decisions``), and must read, decide and commit under ``decision_lock`` for
    capacity_per_day and max_open_leads to hold across processes too."""

    def __init__(self, roster: matching.Roster, current: Mapping[str, matching.Load]) -> None:
        self.roster = roster
        self.current = dict(current)

    @classmethod
    def read(
        cls,
        svc: Services,
        customers: Sequence[matching.Customer],
        now: datetime,
        *,
        subjects: Collection[str] = (),
    ) -> LoadBook:
        """``subjects``: the batch's subject keys. Their decisions already in the ledger are left
        out of the load read here: the caller counts them (``count``) as it reuses them."""
        roster = roster_cache(svc).get(svc)
        userids = sorted({userid for customer in customers for userid in roster.candidates(customer)})
        current: dict[str, matching.Load] = {}
        with svc.sessions() as session:
            for start in range(0, len(userids), _LOAD_QUERY_ADVISORS):
                batch = userids[start : start + _LOAD_QUERY_ADVISORS]
                window = pending_window(svc.settings)
                current.update(loads(session, batch, now, uncounted=subjects, pending_for=window))
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

"""Attempt markers: a call to WeCom that has no idempotency key but whose results WeCom can list.

The effects ledger (app/store/effects.py) keeps WeCom's answer right after the call, so a rerun
never calls twice — except for a run that died between WeCom's answer and the ledger's commit.
Where WeCom gives no dedup handle for that window but can be asked what was made (contact ways:
list_contact_way / get_contact_way), the caller also marks the attempt *before* the call: a row in
the effects table under its own key, written in its own short transaction, holding a lease.

- ``begin_attempt``: no marker → attempt 1. A live lease → AttemptInProgress (another run is at
  it: do not call). A lease that ran out with no answer in the ledger → the run that held it died
  (or gave up unsure, ``expire_attempt``); the next attempt takes the marker over and learns
  ``since``: the start of the first unanswered attempt, from when WeCom may hold its result.
- ``expire_attempt``: the call failed in a way that may still have acted (a timeout, a 5xx): end
  the lease now so the next run asks WeCom at once instead of waiting it out.
- ``end_attempt``: WeCom refused (nothing made), or the answer is in the ledger: drop the marker.

The marker row: ``result = {"attempt": n, "since": iso, "lease_until": iso}``, ``created_at`` the
current attempt's start (the caller's clock). A takeover is a conditional UPDATE on the attempt
number, so of two runs taking over one stale marker only one goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.store.db import insert_for
from app.store.models import Effect

T = Effect.__table__


@dataclass(frozen=True)
class Attempt:
    """The attempt this run holds under ``key``: its number and start, and, when earlier attempts
    ended without an answer, the start of the first of them (``since``; None for a first try)."""

    key: str
    number: int
    started_at: datetime
    since: datetime | None


class AttemptInProgress(Exception):
    """Another run holds the attempt under the key and its lease has not run out: do not call.
    A job lets it propagate, so RQ tries again later (by then that run answered or died)."""

    def __init__(self, key: str, number: int, lease_until: datetime | None) -> None:
        until = f"until {lease_until.isoformat()}" if lease_until else "(just taken over)"
        super().__init__(f"{key}: attempt {number} holds the lease {until}")
        self.key = key
        self.number = number
        self.lease_until = lease_until


def begin_attempt(sessions: sessionmaker[Session], key: str, now: datetime, lease: timedelta) -> Attempt:
    """Mark an attempt under ``key``, leased until ``now + lease``; see the module notes."""
    lease_until = now + lease
    with sessions.begin() as session:
        first = {"attempt": 1, "since": now.isoformat(), "lease_until": lease_until.isoformat()}
        inserted = session.scalar(
            insert_for(session)(T)
            .values(key=key, result=first, created_at=now)
            .on_conflict_do_nothing(index_elements=[T.c.key])
            .returning(T.c.key)
        )
        if inserted is not None:
            return Attempt(key, 1, now, None)
        held = session.scalar(select(T.c.result).where(T.c.key == key))
        if not held or "attempt" not in held:
            raise ValueError(f"{key!r} holds something other than an attempt marker")
        number = int(held["attempt"])
        held_until = datetime.fromisoformat(held["lease_until"])
        if held_until > now:
            raise AttemptInProgress(key, number, held_until)
        mine = {"attempt": number + 1, "since": held["since"], "lease_until": lease_until.isoformat()}
        taken = session.execute(
            update(T)
            .where(T.c.key == key, T.c.result["attempt"].as_integer() == number)
            .values(result=mine, created_at=now)
        )
        if taken.rowcount != 1:
            raise AttemptInProgress(key, number + 1, None)
        return Attempt(key, number + 1, now, datetime.fromisoformat(held["since"]))


def expire_attempt(sessions: sessionmaker[Session], attempt: Attempt, now: datetime) -> None:
    """End this attempt's lease now, keeping the marker (and its ``since``)."""
    with sessions.begin() as session:
        held = session.scalar(select(T.c.result).where(T.c.key == attempt.key))
        if not held or int(held.get("attempt", 0)) != attempt.number:
            return  # taken over meanwhile: no longer ours
        session.execute(
            update(T)
            .where(T.c.key == attempt.key, T.c.result["attempt"].as_integer() == attempt.number)
            .values(result={**held, "lease_until": now.isoformat()})
        )


def end_attempt(session: Session, key: str, number: int | None = None) -> None:
    """Drop the marker under ``key`` (only attempt ``number``'s, if given), in the caller's
    transaction."""
    statement = delete(T).where(T.c.key == key)
    if number is not None:
        statement = statement.where(T.c.result["attempt"].as_integer() == number)
    session.execute(statement)


def marker(sessions: sessionmaker[Session], key: str) -> dict | None:
    """The marker under ``key`` as stored (tests, diagnostics)."""
    with sessions() as session:
        return session.scalar(select(T.c.result).where(T.c.key == key))

"""capacity_per_day and max_open_leads hold exactly across concurrent deciders (app/intake/assign.py):
shared-code adds decided by many workers at once, lead imports at once, both mixed; a decision in
the ledger whose assignment row is not written yet counts as load; the decision lock expires when
its holder dies, and a decider that cannot have it gives up instead of hanging."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.intake import assign, leads, matching
from app.store import effects
from app.store.models import Assignment, Effect, Lead, LeadStatus
from tests.support import roster

ADVISORS = ("a1", "a2", "a3")
RAV4 = matching.Customer(dealer_code="SH01", model="RAV4")


def _roster(svc, *, capacity: int, max_open_leads: int = 100) -> None:
    now = svc.clock.now()
    roster.store(
        svc,
        [roster.dealer("SH01", now, models=["RAV4"])],
        [
            roster.advisor(userid, now, capacity_per_day=capacity, max_open_leads=max_open_leads)
            for userid in ADVISORS
        ],
    )


def _at_once(jobs: list[Callable[[], None]]) -> None:
    """Run the jobs on threads released together (each thread: a worker or web process)."""
    start = threading.Barrier(len(jobs))
    failures: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            start.wait()
            job()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []


def _shared_code_add(svc, key: str) -> Callable[[], None]:
    """What workers/handlers/contacts.py does for a shared-code add: decide, then (after the
    WeCom calls) write the assignment row."""

    def job() -> None:
        decision = assign.decide(svc, key, RAV4)
        time.sleep(0.02)  # the welcome, externalcontact/get and the tags
        with svc.sessions.begin() as session:
            assign.record(
                session,
                key,
                decision,
                reason="shared_code",
                status="kept",
                now=svc.clock.now(),
                external_userid=key,
            )

    return job


def _lead_import(svc, batch: int, size: int) -> Callable[[], None]:
    rows = [
        {"source": "cdp", "external_ref": f"B{batch}-{n}", "model": "RAV4", "dealer": "SH01"}
        for n in range(size)
    ]
    return lambda: leads.import_leads(svc, enumerate(rows, start=1))


def _today(svc) -> tuple[Counter[str], Counter[str], int]:
    """(assignments today that count as load, open leads) per advisor, and rows with no advisor."""
    with svc.sessions() as session:
        rows = session.execute(select(Assignment.advisor_userid, Assignment.status)).all()
        open_leads = Counter(
            session.scalars(select(Lead.advisor_userid).where(Lead.status == LeadStatus.ASSIGNED))
        )
    assigned = Counter(advisor for advisor, status in rows if advisor and status not in assign.NOT_LOAD)
    return assigned, open_leads, sum(1 for advisor, _ in rows if advisor is None)


def test_many_workers_deciding_shared_code_adds_at_once_fill_each_advisor_exactly(svc) -> None:
    _roster(svc, capacity=2)
    _at_once([_shared_code_add(svc, f"event:{n}") for n in range(16)])

    assigned, _, unassigned = _today(svc)
    assert assigned == Counter(dict.fromkeys(ADVISORS, 2))  # never more than capacity_per_day
    assert unassigned == 16 - 6  # the rest: no advisor


def test_lead_imports_at_once_fill_each_advisor_exactly(svc) -> None:
    _roster(svc, capacity=2)
    _at_once([_lead_import(svc, batch, 3) for batch in range(8)])

    assigned, open_leads, unassigned = _today(svc)
    assert assigned == open_leads == Counter(dict.fromkeys(ADVISORS, 2))
    assert unassigned == 24 - 6
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).where(Lead.status == LeadStatus.UNASSIGNED)) == 18


def test_imports_and_shared_code_adds_at_once_respect_both_limits(svc) -> None:
    _roster(svc, capacity=3, max_open_leads=2)
    jobs = [_lead_import(svc, batch, 3) for batch in range(6)]
    jobs += [_shared_code_add(svc, f"event:{n}") for n in range(10)]
    _at_once(jobs)

    assigned, open_leads, _ = _today(svc)
    for userid in ADVISORS:
        assert assigned[userid] <= 3 and open_leads[userid] <= 2
        assert assigned[userid] == 3 or open_leads[userid] == 2  # full: nothing was turned away early


def test_a_decision_not_yet_recorded_counts_as_load(svc) -> None:
    _roster(svc, capacity=1)
    first = assign.decide(svc, "event:1", RAV4)  # in the ledger; the row comes after the WeCom calls
    second = assign.decide(svc, "event:2", RAV4)
    assert first.advisor and second.advisor and first.advisor != second.advisor
    with svc.sessions() as session:
        load = assign.loads(session, list(ADVISORS), svc.clock.now())
    assert load[first.advisor] == matching.Load(assigned_today=1, open_leads=0)

    with svc.sessions.begin() as session:  # the row is written: counted once, by the row
        assign.record(session, "event:1", first, reason="shared_code", status="kept", now=svc.clock.now())
    with svc.sessions() as session:
        assert assign.loads(session, list(ADVISORS), svc.clock.now())[first.advisor].assigned_today == 1
    assert assign.decide(svc, "event:3", RAV4).advisor not in (first.advisor, second.advisor)
    assert assign.decide(svc, "event:4", RAV4).advisor is None


def test_a_lead_decision_not_yet_recorded_also_opens_a_lead_and_is_counted_once(svc) -> None:
    _roster(svc, capacity=5)
    kept = assign.Decision("a1", "SH01", 1.0, {})
    effects.record(svc.sessions, assign.ledger_key("lead:7"), kept.to_json(), svc.clock.now())
    yesterday = svc.clock.now() - timedelta(days=1)
    effects.record(svc.sessions, assign.ledger_key("event:8"), kept.to_json(), yesterday)  # another day
    with svc.sessions() as session:
        assert assign.loads(session, ["a1"], svc.clock.now()) == {"a1": matching.Load(1, 1)}
        # A batch that reuses the decision counts it itself: the load leaves it out.
        assert assign.loads(session, ["a1"], svc.clock.now(), uncounted=["lead:7"]) == {}
    book = assign.LoadBook.read(svc, [RAV4], svc.clock.now(), subjects=["lead:7"])
    book.count(kept)
    assert book.current["a1"] == matching.Load(1, 1)


def test_a_decision_whose_job_gave_up_stops_counting_after_the_pending_window(svc) -> None:
    """A decision waits for its row at most as long as its job and all its retries can run;
    older ones are not read, so the query stays small on a busy day (the last hour, not the day)."""
    _roster(svc, capacity=5)
    kept = assign.Decision("a1", "SH01", 1.0, {})
    now = svc.clock.now()
    window = assign.pending_window(svc.settings)
    assert window == timedelta(seconds=sum(svc.settings.retry_intervals)) + (
        1 + len(svc.settings.retry_intervals)
    ) * timedelta(seconds=svc.settings.JOB_TIMEOUT)
    effects.record(svc.sessions, assign.ledger_key("event:1"), kept.to_json(), now - window / 2)
    effects.record(svc.sessions, assign.ledger_key("event:2"), kept.to_json(), now - window * 1.01)
    with svc.sessions() as session:
        assert assign.loads(session, ["a1"], now, pending_for=window) == {"a1": matching.Load(1, 0)}
        assert assign.start_of_day(now) < now - window * 1.01  # 10:00 in China: both are today's
        assert assign.loads(session, ["a1"], now) == {"a1": matching.Load(2, 0)}  # the whole day


def test_a_lock_left_by_a_dead_holder_expires(svc) -> None:
    _roster(svc, capacity=2)
    svc.redis.set(assign.LOCK_NAME, "a worker that was killed", px=300)
    started = time.monotonic()
    assert assign.decide(svc, "event:1", RAV4).advisor is not None
    assert time.monotonic() - started >= 0.2  # it waited for the expiry, then went on

    with assign.decision_lock(svc):  # ours expires too, should we die holding it
        assert 0 < svc.redis.pttl(assign.LOCK_NAME) <= assign.LOCK_TTL_SECONDS * 1000
    assert not svc.redis.exists(assign.LOCK_NAME)


def test_a_decider_that_cannot_have_the_lock_gives_up_and_decides_nothing(svc, monkeypatch) -> None:
    _roster(svc, capacity=2)
    monkeypatch.setattr(assign, "LOCK_WAIT_SECONDS", 0.1)
    svc.redis.set(assign.LOCK_NAME, "a long section", px=10_000)
    with pytest.raises(assign.AssignmentBusy):
        assign.decide(svc, "event:1", RAV4)
    with pytest.raises(assign.AssignmentBusy):
        leads.import_leads(
            svc, [(1, {"source": "cdp", "external_ref": "R-1", "model": "RAV4", "dealer": "SH01"})]
        )
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Effect)) == 0
        assert session.scalar(select(Lead.status)) == LeadStatus.NEW  # stored; the next import finishes it

    svc.redis.delete(assign.LOCK_NAME)
    report = leads.import_leads(
        svc, [(1, {"source": "cdp", "external_ref": "R-1", "model": "RAV4", "dealer": "SH01"})]
    )
    assert report.results[0].advisor is not None

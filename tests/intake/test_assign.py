"""Assignment service (app/intake/assign.py) on a real database: today's load in China time,
one decision per subject, one row per key, the roster cache following the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from app.intake import assign, matching
from app.store.models import Advisor, Assignment
from tests.support import roster


def _roster(svc) -> None:
    now = svc.clock.now()
    roster.store(
        svc,
        [roster.dealer("SH01", now)],
        [
            roster.advisor(userid, now, name=userid.upper(), models=models, capacity_per_day=2, max_open_leads=10)
            for userid, models in (("a", ["RAV4"]), ("b", []))
        ],
    )


def _assignment(session, key: str, advisor: str, at: datetime, status: str = "kept") -> None:
    decision = assign.Decision(advisor, "SH01", 1.0, {})
    assign.record(session, key, decision, reason="test", status=status, now=at, external_userid=key)


def test_load_counts_the_dealers_day_in_china(svc) -> None:
    beijing_midnight = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # 2026-11-24 00:00 in Shanghai
    with svc.sessions.begin() as session:
        _assignment(session, "yesterday", "a", beijing_midnight - timedelta(minutes=1))
        _assignment(session, "today-1", "a", beijing_midnight + timedelta(minutes=1))
        _assignment(session, "today-2", "a", beijing_midnight + timedelta(hours=20))
        _assignment(session, "refused", "a", beijing_midnight + timedelta(hours=1), status="failed")
    with svc.sessions() as session:
        loads = assign.loads(session, ["a", "b"], beijing_midnight + timedelta(hours=23))
    assert loads == {"a": matching.Load(assigned_today=2, open_leads=0)}
    assert assign.start_of_day(beijing_midnight + timedelta(hours=23)) == beijing_midnight


def test_a_decision_is_made_once_per_subject(svc, clock) -> None:
    _roster(svc)
    customer = matching.Customer(dealer_code="SH01", model="RAV4")
    first = assign.decide(svc, "customer:1", customer)
    assert first.advisor == "a" and first.explanation["chosen"]["breakdown"]["model"] == 3.0

    # "a" is deactivated; the subject already decided keeps its answer, a new one does not.
    with svc.sessions.begin() as session:
        session.execute(update(Advisor).where(Advisor.userid == "a").values(active=False))
    clock.advance(assign.ROSTER_CHECK_SECONDS + 1)
    assert assign.decide(svc, "customer:1", customer) == first
    second = assign.decide(svc, "customer:2", customer)
    assert second.advisor == "b" and second.explanation["excluded"] == {"a": "inactive"}


def test_capacity_used_today_moves_customers_on(svc) -> None:
    _roster(svc)
    customer = matching.Customer(dealer_code="SH01", model="RAV4")
    chosen = []
    for n in range(5):
        decision = assign.decide(svc, f"customer:{n}", customer)
        with svc.sessions.begin() as session:
            assign.record(
                session, f"customer:{n}", decision, reason="test", status="kept", now=svc.clock.now()
            )
        chosen.append(decision.advisor)
    # capacity_per_day is 2: two each, then nobody.
    assert sorted(chosen[:4]) == ["a", "a", "b", "b"] and chosen[4] is None
    with svc.sessions() as session:
        statuses = list(session.scalars(select(Assignment.status).order_by(Assignment.id)))
    assert statuses[-1] == "unassigned"


def test_an_assignment_row_is_written_once_per_key(svc) -> None:
    with svc.sessions.begin() as session:
        _assignment(session, "event:7", "a", svc.clock.now())
    with svc.sessions.begin() as session:
        _assignment(session, "event:7", "b", svc.clock.now())
    with svc.sessions() as session:
        rows = session.execute(
            select(Assignment.advisor_userid, func.count()).group_by(Assignment.advisor_userid)
        ).all()
    assert rows == [("a", 1)]

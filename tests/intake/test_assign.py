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


def test_a_load_book_decides_a_batch_as_recording_each_decision_first_would(svc) -> None:
    _roster(svc)
    customer = matching.Customer(dealer_code="SH01", model="RAV4")
    with svc.sessions.begin() as session:
        _assignment(session, "earlier", "a", svc.clock.now())  # "a" has one of its 2 places left
    book = assign.LoadBook.read(svc, [customer] * 4, svc.clock.now())
    chosen = [book.decide(customer).advisor for _ in range(3)]
    assert chosen == ["b", "a", "b"] and book.decide(customer).advisor is None  # spare capacity wins
    assert book.current["b"] == matching.Load(assigned_today=2, open_leads=2)

    other = assign.LoadBook.read(svc, [customer], svc.clock.now())
    other.count(assign.Decision("a", "SH01", 1.0, {}), opens_lead=False)  # e.g. one found in the ledger
    assert other.current["a"] == matching.Load(assigned_today=2, open_leads=0)
    assert other.decide(customer).advisor == "b"


def test_decisions_kept_in_a_transaction_first_writer_wins(svc) -> None:
    first = assign.Decision("a", "SH01", 1.0, {"reason": "first"})
    second = assign.Decision("b", "SH01", 2.0, {"reason": "second"})
    with svc.sessions.begin() as session:
        assert assign.keep_decisions(session, {"lead:1": first}, svc.clock.now()) == {"lead:1": first}
    with svc.sessions.begin() as session:
        kept = assign.keep_decisions(session, {"lead:1": second, "lead:2": second}, svc.clock.now())
    assert kept == {"lead:1": first, "lead:2": second}
    with svc.sessions() as session:
        assert assign.recorded_decisions(session, ["lead:1", "lead:2", "lead:3"]) == kept
    assert assign.decide(svc, "lead:1", matching.Customer(dealer_code="SH01")) == first  # the same ledger


def test_assignment_rows_in_one_statement_once_per_key(svc) -> None:
    now = svc.clock.now()
    rows = [
        assign.assignment_row(f"lead:{n}", assign.Decision(advisor, "SH01", 1.0, {}), reason="lead",
                              status="assigned", now=now)
        for n, advisor in ((1, "a"), (2, None))
    ]  # fmt: skip
    with svc.sessions.begin() as session:
        assign.record_rows(session, rows)
        assign.record_rows(session, rows)
    with svc.sessions() as session:
        stored = session.execute(
            select(Assignment.dedup_key, Assignment.advisor_userid, Assignment.status).order_by(Assignment.id)
        ).all()
    assert stored == [("lead:1", "a", "assigned"), ("lead:2", None, "unassigned")]

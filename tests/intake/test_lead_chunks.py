"""Lead import in chunks (app/intake/leads.py ``import_chunk``): the same outcomes, advisors and
rows as importing one lead at a time (``import_one``), with a few statements per chunk; crashes
and concurrent imports leave nothing doubled."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import delete, event, func, select, update

from app.intake import assign, leads
from app.store import effects
from app.store.models import Advisor, Assignment, Effect, Interaction, Lead, LeadStatus
from tests.intake import test_leads
from tests.intake.test_leads import lead_row, run
from workers.queues import DEFAULT, queue

roster = test_leads.roster  # the fixture, shared


def limit(svc, userid: str, **limits: int) -> None:
    """Set an advisor's capacity_per_day / max_open_leads (before the roster is first cached)."""
    with svc.sessions.begin() as session:
        session.execute(update(Advisor).where(Advisor.userid == userid).values(**limits))


def forget_imports(svc) -> None:
    """Remove every lead and what importing it wrote, and the queued cards."""
    with svc.sessions.begin() as session:
        for model in (Interaction, Assignment, Effect, Lead):
            session.execute(delete(model))
    svc.redis.flushdb()


def one_at_a_time(svc, rows: list[Any]) -> list[leads.RowResult]:
    with svc.sessions() as session:
        catalogue = leads.Catalogue.load(session)
    return [leads.import_one(svc, number, fields, catalogue) for number, fields in enumerate(rows, start=1)]


def outcome(results: list[leads.RowResult]) -> list[tuple[int, str, str | None, list[str]]]:
    return [(r.row, r.status, r.advisor, r.errors) for r in results]


def stored(svc) -> dict[str, Any]:
    """What the import wrote, by lead key (lead ids differ between two runs)."""
    with svc.sessions() as session:
        keys = dict(session.execute(select(Lead.id, Lead.lead_key)).all())

        def payload(interaction: Interaction) -> str:
            fields = {**interaction.payload, "lead_id": keys[interaction.payload["lead_id"]]}
            return json.dumps(fields, sort_keys=True, ensure_ascii=False)

        return {
            "leads": sorted(
                (lead.lead_key, lead.status, lead.advisor_userid, lead.dealer_code)
                for lead in session.scalars(select(Lead))
            ),
            "assignments": sorted(
                (
                    keys[a.lead_id],
                    a.advisor_userid,
                    a.status,
                    a.score,
                    json.dumps(a.explanation, sort_keys=True),
                )
                for a in session.scalars(select(Assignment))
            ),
            "interactions": sorted(
                (
                    (i.kind, i.advisor_userid, i.dealer_code, payload(i))
                    for i in session.scalars(select(Interaction))
                ),
                key=repr,
            ),
            "cards": queue(DEFAULT, svc.redis).count,
        }


def crash_after_storing(monkeypatch: pytest.MonkeyPatch, svc, row: dict[str, Any]) -> int:
    """Import ``row`` in a process that dies once the chunk's leads are committed ``new``."""

    def die(*_args: Any) -> None:
        raise SystemExit("killed between storing and assigning the chunk")

    with monkeypatch.context() as patch:
        patch.setattr(leads, "assign_many", die)
        with pytest.raises(SystemExit):
            run(svc, row)
    with svc.sessions() as session:
        return session.scalar(select(Lead.id).where(Lead.status == LeadStatus.NEW))


def mixed_rows() -> list[Any]:
    """SH01 RAV4 and CAMRY leads, HZ01 BZ4X leads, a lead by city, duplicates near and far,
    invalid rows and a lead nobody sells to."""
    rows: list[Any] = []
    for n in range(12):
        model = "CAMRY" if n % 3 == 0 else "RAV4"
        rows.append(lead_row(external_ref=f"SH-{n}", model=model, intent=90 if n % 4 == 0 else 50))
        if n % 4 == 1:
            rows.append(lead_row(external_ref=f"HZ-{n}", model="BZ4X", city="杭州", dealer="HZ01"))
    rows.insert(3, lead_row(external_ref="SH-1"))  # a duplicate in the same chunk (of 4)
    rows.append(lead_row(external_ref="SH-0"))  # … and one chunks later
    rows.insert(5, lead_row(phone="12345"))
    rows.insert(9, "not an object")
    rows.append(lead_row(external_ref="SZ-1", dealer=None, city="苏州"))
    rows.append(lead_row(external_ref="BJ-1", dealer="BJ01", city="北京", model="CAMRY"))
    return rows


@pytest.mark.parametrize("chunk_size", [1, 4, 200])
def test_chunks_give_the_outcomes_and_rows_of_one_lead_at_a_time(svc, roster, chunk_size) -> None:
    # Few places: capacity runs out within the request, so each decision must count the earlier ones.
    limit(svc, "zhang.wei", capacity_per_day=4)
    limit(svc, "li.na", capacity_per_day=3)
    limit(svc, "wang.fang", max_open_leads=2)
    rows = mixed_rows()

    expected = one_at_a_time(svc, rows)
    expected_rows = stored(svc)
    forget_imports(svc)
    seen: list[int] = []
    report = run(svc, *rows, chunk_size=chunk_size, on_result=lambda r: seen.append(r.row))

    assert outcome(report.results) == outcome(expected)
    assert stored(svc) == expected_rows
    assert seen == list(range(1, len(rows) + 1))
    advisors = Counter(r.advisor for r in report.results if r.status == "created")
    assert advisors == {"zhang.wei": 4, "li.na": 3, "wang.fang": 2, None: 8}
    assert (report.created, report.duplicates, report.invalid) == (17, 2, 2)


def test_a_chunk_costs_a_few_statements_however_many_leads_it_has(svc, roster) -> None:
    run(svc, lead_row(external_ref="warm-up"))  # the catalogue's and the roster's first reads
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement.split(None, 1)[0])

    counts = []
    for size in (10, 40):
        statements.clear()
        event.listen(svc.engine, "before_cursor_execute", count)
        try:
            rows = [
                lead_row(external_ref=f"S{size}-{n}", model="CAMRY" if n % 2 else "RAV4") for n in range(size)
            ]
            assert run(svc, *rows).created == size
        finally:
            event.remove(svc.engine, "before_cursor_execute", count)
        counts.append(len(statements))
    assert counts[0] == counts[1] <= 12, statements


def test_a_request_cut_short_mid_chunk_is_finished_by_sending_it_again(svc, roster, monkeypatch) -> None:
    rows = [lead_row(external_ref=f"R-{n}", model="CAMRY" if n % 2 else "RAV4") for n in range(7)]
    real = leads.assign_many
    calls = []

    def dies_on_the_second_chunk(*args: Any) -> dict[int, str | None]:
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit("killed between storing the chunk and assigning it")
        return real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(leads, "assign_many", dies_on_the_second_chunk)
        with pytest.raises(SystemExit):
            run(svc, *rows, chunk_size=3)
    with svc.sessions() as session:
        statuses = Counter(session.scalars(select(Lead.status)))
    assert statuses == {LeadStatus.ASSIGNED: 3, LeadStatus.NEW: 3}  # the third chunk never ran

    again = run(svc, *rows, chunk_size=3)
    assert [r.status for r in again.results] == ["duplicate"] * 6 + ["created"]
    assert all(r.advisor for r in again.results)
    with svc.sessions() as session:
        per_lead = Counter(session.scalars(select(Assignment.lead_id)))
        interactions_per_lead = Counter(session.scalars(select(Interaction.dedup_key)))
    assert sorted(per_lead.values()) == [1] * 7
    assert set(interactions_per_lead.values()) == {1} and len(interactions_per_lead) == 14
    assert sorted(j.id for j in queue(DEFAULT, svc.redis).jobs) == sorted(
        leads.card_job_id(r.lead_id) for r in again.results
    )


def test_cards_lost_after_the_write_are_enqueued_by_the_next_import_once(svc, roster, monkeypatch) -> None:
    rows = [lead_row(external_ref=f"R-{n}") for n in range(3)]

    def redis_gone(*_args: Any) -> None:
        raise ConnectionError("Redis went away")

    with monkeypatch.context() as patch:
        patch.setattr(leads, "enqueue_cards", redis_gone)
        with pytest.raises(ConnectionError):
            run(svc, *rows)
    with svc.sessions() as session:
        assert set(session.scalars(select(Lead.status))) == {LeadStatus.ASSIGNED}
        before = session.scalar(select(func.count()).select_from(Interaction))
    assert before == 6 and queue(DEFAULT, svc.redis).count == 0

    again = run(svc, *rows)
    assert [r.status for r in again.results] == ["duplicate"] * 3
    assert queue(DEFAULT, svc.redis).count == 3
    run(svc, *rows)  # their jobs are queued: not twice
    assert queue(DEFAULT, svc.redis).count == 3
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Interaction)) == before


def test_a_decision_an_earlier_attempt_kept_is_used_and_counted(svc, roster, monkeypatch) -> None:
    limit(svc, "li.na", capacity_per_day=1)
    first = crash_after_storing(monkeypatch, svc, lead_row(external_ref="R-1"))
    # The attempt had decided li.na (the engine would pick zhang.wei, SH01's RAV4 expert).
    kept = assign.Decision("li.na", "SH01", 1.0, {"reason": "kept earlier"})
    effects.record(
        svc.sessions, assign.ledger_key(leads.lead_subject(first)), kept.to_json(), svc.clock.now()
    )

    report = run(svc, lead_row(external_ref="R-1"), lead_row(external_ref="R-2", model="CAMRY"))
    # li.na's one place today went to the first lead: the CAMRY lead cannot have her.
    assert [(r.status, r.advisor) for r in report.results] == [
        ("duplicate", "li.na"),
        ("created", "zhang.wei"),
    ]
    with svc.sessions() as session:
        assignment = leads.assignment_for(session, first)
    assert (assignment.advisor_userid, assignment.explanation) == ("li.na", {"reason": "kept earlier"})


def test_a_lead_finished_meanwhile_by_another_process_is_left_as_it_is(svc, roster, monkeypatch) -> None:
    lead_id = crash_after_storing(monkeypatch, svc, lead_row())
    with svc.sessions() as session:
        stale = session.get(Lead, lead_id)  # read while still new …
    assert stale.status == LeadStatus.NEW
    assert leads.assign_lead(svc, lead_id) == "zhang.wei"  # … then the lead sweep finishes it

    assert leads.assign_many(svc, [stale]) == {lead_id: "zhang.wei"}
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Assignment)) == 1
        assert session.scalar(select(func.count()).select_from(Interaction)) == 2
    assert queue(DEFAULT, svc.redis).count == 1


def test_two_imports_of_the_same_leads_at_once_assign_each_once(svc, roster) -> None:
    """Two web processes, the same 120 leads in two orders (their chunks overlap): no deadlock,
    each lead stored, decided and written once, and both answers agree."""
    for userid in ("zhang.wei", "li.na", "wang.fang"):
        limit(svc, userid, capacity_per_day=1000, max_open_leads=1000)
    rows = [lead_row(external_ref=f"R-{n}", model=("RAV4", "CAMRY", "BZ4X")[n % 3]) for n in range(120)]
    order = random.Random(7).sample(range(len(rows)), len(rows))
    reports: dict[str, list[leads.RowResult]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def importer(name: str, ordered: list[Any]) -> None:
        try:
            start.wait()
            reports[name] = run(svc, *ordered, chunk_size=40).results
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [
        threading.Thread(target=importer, args=("forwards", rows)),
        threading.Thread(target=importer, args=("shuffled", [rows[n] for n in order])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    forwards = reports["forwards"]
    shuffled = [result for _, result in sorted(zip(order, reports["shuffled"], strict=True))]
    assert [a.lead_id for a in forwards] == [b.lead_id for b in shuffled]
    assert [a.advisor for a in forwards] == [b.advisor for b in shuffled]
    assert all(a.advisor for a in forwards)
    assert all(
        {a.status, b.status} == {"created", "duplicate"} for a, b in zip(forwards, shuffled, strict=True)
    )
    with svc.sessions() as session:
        assert sorted(Counter(session.scalars(select(Assignment.lead_id))).values()) == [1] * 120
        assert session.scalar(select(func.count()).select_from(Interaction)) == 240
        assert session.scalar(select(func.count()).where(Lead.status == LeadStatus.ASSIGNED)) == 120
    assert len({job.id for job in queue(DEFAULT, svc.redis).jobs}) == 120


def test_a_link_token_already_taken_is_drawn_again(svc, roster, monkeypatch) -> None:
    tokens = iter(["TAKENTAKEN", "TAKENTAKEN"])
    draw = leads.new_link_token
    monkeypatch.setattr(leads, "new_link_token", lambda: next(tokens, None) or draw())
    report = run(svc, *[lead_row(external_ref=f"R-{n}") for n in range(3)])
    assert [r.status for r in report.results] == ["created"] * 3
    with svc.sessions() as session:
        assert len(set(session.scalars(select(Lead.link_token)))) == 3

"""The lead sweep (app/intake/lead_recovery.py): imports a crash cut short are finished by the
workers, not left waiting for the same lead to be imported again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.intake import lead_recovery, leads
from app.store.models import Assignment, Interaction, Lead, LeadStatus
from tests.intake import test_leads
from tests.intake.test_leads import lead_row, run, sent_cards
from workers.queues import DEFAULT, queue

roster = test_leads.roster  # the fixtures, shared
wecom_http = test_leads.wecom_http
GRACE = timedelta(seconds=31)  # INBOX_SWEEP_GRACE is 30 s


def crash_after_storing(monkeypatch: pytest.MonkeyPatch, svc, row: dict) -> int:
    """Import ``row`` in a process that dies right after the lead is committed."""

    def die(*_args, **_kwargs):
        raise SystemExit("killed between storing and assigning the lead")

    with monkeypatch.context() as patch:
        patch.setattr(leads, "assign_many", die)
        with pytest.raises(SystemExit):
            run(svc, row)
    with svc.sessions() as session:
        lead = session.scalars(select(Lead)).one()
    assert lead.status == LeadStatus.NEW and lead.advisor_userid is None
    return lead.id


def test_a_lead_left_new_by_a_crash_is_assigned_and_its_advisor_told_once(
    monkeypatch, app, svc, clock, roster, wecom_http, work
) -> None:
    lead_id = crash_after_storing(monkeypatch, svc, lead_row())
    assert lead_recovery.sweep(svc).assigned == 0  # still within the grace: an import may be running
    clock.advance(GRACE)

    work()  # the worker's maintenance step runs the sweep, then the card job

    with svc.sessions() as session:
        lead = session.get(Lead, lead_id)
        assignments = session.scalar(select(func.count()).select_from(Assignment))
        kinds = sorted(session.scalars(select(Interaction.kind)))
    assert (lead.status, lead.advisor_userid) == (LeadStatus.ASSIGNED, "zhang.wei")
    assert assignments == 1
    assert kinds == ["assigned", "lead_card_sent", "lead_imported"]
    assert [card["touser"] for card in sent_cards(wecom_http)] == ["zhang.wei"]

    result = lead_recovery.sweep(svc)  # nothing left to finish
    assert (result.assigned, result.cards_enqueued) == (0, 0)
    work()
    assert len(sent_cards(wecom_http)) == 1


def test_a_card_job_lost_before_redis_had_it_is_enqueued_again_once(
    app, svc, clock, roster, wecom_http, work
) -> None:
    lead_id = run(svc, lead_row()).results[0].lead_id
    queue(DEFAULT, svc.redis).empty()  # the enqueue never reached Redis
    clock.advance(GRACE)

    assert lead_recovery.sweep(svc).cards_enqueued == 1
    assert lead_recovery.sweep(svc).cards_enqueued == 0  # its job is queued: not twice
    assert [job.id for job in queue(DEFAULT, svc.redis).jobs] == [leads.card_job_id(lead_id)]

    work()
    assert [card["touser"] for card in sent_cards(wecom_http)] == ["zhang.wei"]
    queue(DEFAULT, svc.redis).empty()
    assert lead_recovery.sweep(svc).cards_enqueued == 0  # sent: the ledger has it


def test_an_unassigned_lead_has_no_card_to_recover(svc, clock, roster) -> None:
    # BJ01 has no advisors: the lead ends unassigned, and there is nobody to tell.
    run(svc, lead_row(dealer="BJ01", city="北京", model="CAMRY"))
    clock.advance(GRACE)
    assert lead_recovery.unfinished_leads(svc, svc.clock.now()) == []


def test_a_lead_older_than_the_window_is_left_alone(monkeypatch, svc, clock, roster) -> None:
    crash_after_storing(monkeypatch, svc, lead_row())
    clock.advance(lead_recovery.WINDOW - timedelta(minutes=1))
    assert [lead.status for lead in lead_recovery.unfinished_leads(svc, svc.clock.now())] == ["new"]
    clock.advance(timedelta(minutes=2))  # a card about a lead this old is news to nobody
    assert lead_recovery.unfinished_leads(svc, svc.clock.now()) == []
    assert lead_recovery.sweep(svc).assigned == 0

"""Campaign submission against the live sandbox: the frozen audience, one add_msg_template per
advisor batch, fail_list recorded, exactly once under a retried job, a job killed after the ledger
write, and 45009 under a low sandbox rate limit."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from app.campaigns import states, submit
from app.store import effects
from app.store.campaign_models import Campaign, CampaignBatch, CampaignRecipient
from app.store.models import Interaction
from app.wecom.errors import WeComUnavailable
from tests.campaigns.live import (
    corp,
    create,
    customers,
    live_config,
    statuses,
    submit_killed_before_the_ledger,
    submit_with_the_answer_lost,
    submitted_to_wecom,
    wecom,
)
from workers import campaign_jobs

__all__ = ["corp", "wecom"]  # fixtures


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom) -> dict[str, Any]:
    return live_config(app_config, wecom, CAMPAIGN_BATCH_SIZE=3)


@pytest.fixture()
def audience(svc, corp) -> dict[str, list[str]]:
    return {
        "sh_a": customers(svc, corp, "sh_a", 5, prefix="a"),
        "sh_b": customers(svc, corp, "sh_b", 2, prefix="b"),
        "ghost": customers(svc, corp, "sh_b", 2, prefix="g", in_wecom=False),  # WeCom: fail_list
    }


def everyone(audience: dict[str, list[str]]) -> list[str]:
    return sorted(ext for group in audience.values() for ext in group)


def _kinds(svc) -> dict[str, int]:
    with svc.sessions() as session:
        rows = session.execute(select(Interaction.kind, func.count()).group_by(Interaction.kind)).all()
    return {kind: n for kind, n in rows if kind.startswith("campaign_")}


def _state(svc, campaign_id: int) -> str:
    with svc.sessions() as session:
        return session.get(Campaign, campaign_id).state


def test_submission_in_process_groups_by_advisor_and_records_fail_list(svc, corp, audience) -> None:
    campaign_id = create(svc)
    assert submit.run(svc, campaign_id) == {"submitted": 4}  # sh_a: 3 + 2, sh_b: 3 + 1
    with svc.sessions() as session:
        batches = session.scalars(
            select(CampaignBatch).order_by(CampaignBatch.advisor_userid, CampaignBatch.batch_no)
        ).all()
        assert [(b.advisor_userid, b.batch_no, b.size, b.status) for b in batches] == [
            ("sh_a", 0, 3, "submitted"), ("sh_a", 1, 2, "submitted"), ("sh_b", 0, 3, "submitted"),
            ("sh_b", 1, 1, "submitted"),
        ]  # fmt: skip
    sends = corp.state.mass_sends
    assert len(sends) == 4
    assert sorted(submitted_to_wecom(corp)) == everyone(audience)
    assert all(
        send.sender in ("sh_a", "sh_b") and len(send.external_userids) + len(send.fail_list) <= 3
        for send in sends.values()
    )
    assert statuses(svc, campaign_id) == {"submitted": 7, "failed": 2}
    with svc.sessions() as session:
        failed = session.scalars(select(CampaignRecipient).where(CampaignRecipient.status == "failed")).all()
        assert {r.external_userid for r in failed} == set(audience["ghost"])
        assert {r.reason for r in failed} == {"fail_list"}
        fail_lists = [b.fail_list for b in session.scalars(select(CampaignBatch)) if b.fail_list]
        assert sorted(x for f in fail_lists for x in f) == sorted(audience["ghost"])
    assert _state(svc, campaign_id) == states.WAITING
    assert _kinds(svc) == {"campaign_targeted": 9, "campaign_submitted": 7, "campaign_failed": 2}
    # Running it again submits nothing and writes nothing.
    assert submit.run(svc, campaign_id) == {}
    assert submit.submit_batch(svc, campaign_id, "sh_a", 0) == "applied"
    assert len(corp.state.mass_sends) == 4
    assert _kinds(svc) == {"campaign_targeted": 9, "campaign_submitted": 7, "campaign_failed": 2}


def test_a_job_killed_after_the_ledger_write_is_applied_from_the_ledger_on_rerun(
    app, svc, corp, audience, monkeypatch
) -> None:
    campaign_id = create(svc)
    refs = submit.start(svc, campaign_id)
    assert len(refs) == 4

    def killed(key: str) -> None:
        raise SystemExit(f"killed after {key}")

    monkeypatch.setattr(submit, "after_ledger", killed)
    with pytest.raises(SystemExit):
        submit.submit_batch(svc, campaign_id, "sh_a", 0)
    key = submit.ledger_key(campaign_id, "sh_a", 0)
    assert effects.recorded(svc.sessions, key)["msgid"] in corp.state.mass_sends
    with svc.sessions() as session:
        batch = session.scalars(select(CampaignBatch).where(CampaignBatch.batch_no == 0,
                                                            CampaignBatch.advisor_userid == "sh_a")).one()  # fmt: skip
        assert (batch.status, batch.msgid) == ("submitting", None)  # the answer was never applied
    monkeypatch.setattr(submit, "after_ledger", None)
    # The retry (the lease is still live: the ledger is read before any claim) and the rest.
    assert submit.submit_batch(svc, campaign_id, "sh_a", 0) == "applied"
    with app.app_context():  # the jobs themselves, as RQ runs them
        assert campaign_jobs.submit_campaign(campaign_id).endswith("3 batch job(s) enqueued")
        for ref in refs[1:]:
            assert campaign_jobs.submit_batch(campaign_id, ref.advisor_userid, ref.batch_no) == "submitted"
    assert len(corp.state.mass_sends) == 4
    assert sorted(submitted_to_wecom(corp)) == everyone(audience)
    assert statuses(svc, campaign_id) == {"submitted": 7, "failed": 2}
    assert _state(svc, campaign_id) == states.WAITING


def test_a_claimed_batch_is_not_submitted_by_a_second_job(svc, corp, audience) -> None:
    campaign_id = create(svc)
    submit.start(svc, campaign_id)
    claimed = submit._claim(svc, campaign_id, "sh_a", 0)  # a live job holds it
    assert claimed is not None
    assert submit.submit_batch(svc, campaign_id, "sh_a", 0) == "skipped"
    assert corp.state.mass_sends == {}
    # Its lease runs out (the job died before WeCom answered): the next run may take it.
    svc.clock.advance(svc.settings.JOB_TIMEOUT + 31)
    assert submit.submit_batch(svc, campaign_id, "sh_a", 0) == "submitted"
    assert len(corp.state.mass_sends) == 1


def test_45009_under_a_low_rate_limit_backs_off_and_loses_nothing(svc, corp, audience, work) -> None:
    corp.state.configure(rate_limits={"externalcontact/add_msg_template": 2})
    campaign_id = create(svc)
    work()  # maintenance: the sweep enqueues submit_campaign → 4 batch jobs; two go through
    with svc.sessions() as session:
        done = session.scalar(select(func.count()).where(CampaignBatch.status == "submitted"))
        pending = session.scalars(select(CampaignBatch).where(CampaignBatch.status == "pending")).all()
    assert done == 2 and len(pending) == 2
    assert all("45009" in (b.error or "") for b in pending)  # released, with the reason
    assert _state(svc, campaign_id) == states.SUBMITTING
    with pytest.raises(WeComUnavailable):  # still inside WeCom's window
        submit.submit_batch(svc, campaign_id, pending[0].advisor_userid, pending[0].batch_no)
    svc.clock.advance(61)  # the window passes; the sweep re-enqueues the pending batches
    svc.redis.delete(campaign_jobs.LOCK_KEY)
    for key in svc.redis.scan_iter("scrm:campaign:queued:*"):
        svc.redis.delete(key)
    work()
    assert _state(svc, campaign_id) == states.WAITING
    assert len(corp.state.mass_sends) == 4
    assert sorted(submitted_to_wecom(corp)) == everyone(audience)  # each once
    assert statuses(svc, campaign_id) == {"submitted": 7, "failed": 2}


def test_an_empty_audience_goes_straight_to_waiting(svc, corp) -> None:
    campaign_id = create(svc)
    assert submit.run(svc, campaign_id) == {}
    assert _state(svc, campaign_id) == states.WAITING
    assert corp.state.mass_sends == {}


def test_a_job_killed_between_wecoms_answer_and_the_ledger_finds_its_task(svc, corp, audience, monkeypatch) -> None:
    """The one window WeCom gives no dedup handle for: add_msg_template answered, the ledger row
    never committed. The next run lists the advisor's sends (get_groupmsg_list_v2) and adopts the
    task instead of submitting the batch again."""
    campaign_id = create(svc)
    submit.start(svc, campaign_id)
    submit_killed_before_the_ledger(svc, campaign_id, "sh_a", 1, monkeypatch)
    [made] = corp.state.mass_sends  # WeCom made the task

    assert submit.submit_batch(svc, campaign_id, "sh_a", 1) == "skipped"  # its lease is still live
    svc.clock.advance(svc.settings.JOB_TIMEOUT + 31)
    assert submit.submit_batch(svc, campaign_id, "sh_a", 1) == "submitted"
    assert list(corp.state.mass_sends) == [made]  # not submitted again
    assert corp.state.stats()["api_calls"]["externalcontact/add_msg_template"] == 1
    with svc.sessions() as session:
        batch = session.scalars(select(CampaignBatch).where(CampaignBatch.advisor_userid == "sh_a",
                                                            CampaignBatch.batch_no == 1)).one()  # fmt: skip
    assert (batch.status, batch.msgid) == ("submitted", made)
    # The other batch of the same advisor, with the same text, is still submitted normally.
    assert submit.submit_batch(svc, campaign_id, "sh_a", 0) == "submitted"
    assert len(corp.state.mass_sends) == 2


def test_a_call_whose_answer_was_lost_is_looked_up_not_sent_again(svc, corp, audience) -> None:
    """WeCom made the task but its answer never came back (a gateway's 502 after the fact): the
    client does not retry add_msg_template, the batch's claim ends at once, and the next claim
    finds the task through get_groupmsg_list_v2 instead of making a second one."""
    campaign_id = create(svc)
    submit.start(svc, campaign_id)
    made = submit_with_the_answer_lost(svc, corp, campaign_id)  # WeCom made it; we never heard
    with svc.sessions() as session:
        batch = session.scalars(select(CampaignBatch).where(CampaignBatch.advisor_userid == "sh_a",
                                                            CampaignBatch.batch_no == 0)).one()  # fmt: skip
    assert batch.status == "submitting" and batch.lease_until < svc.clock.now()  # claim ended

    assert submit.submit_batch(svc, campaign_id, "sh_a", 0) == "submitted"  # RQ's retry
    assert list(corp.state.mass_sends) == [made]
    assert corp.state.stats()["api_calls"]["externalcontact/add_msg_template"] == 1
    with svc.sessions() as session:
        batch = session.get(CampaignBatch, batch.id)
    assert (batch.status, batch.msgid, batch.fail_list) == ("submitted", made, [])


def test_a_busy_wecom_while_looking_for_a_lost_task_keeps_the_batch_to_be_looked_up(
    svc, corp, audience
) -> None:
    """The claim after a lost answer must look for the task first; when that look-up itself meets
    a busy WeCom (45009 on get_groupmsg_list_v2), the batch must still be looked up next time, not
    released as if it had never been sent (the next claim would make a second task)."""
    campaign_id = create(svc)
    submit.start(svc, campaign_id)
    made = submit_with_the_answer_lost(svc, corp, campaign_id)
    busy = corp.state.faults.add({"path": "externalcontact/get_groupmsg_list_v2", "errcode": 45009})
    with pytest.raises(WeComUnavailable):
        submit.submit_batch(svc, campaign_id, "sh_a", 0)
    corp.state.faults.remove(busy.id)

    assert submit.submit_batch(svc, campaign_id, "sh_a", 0) == "submitted"  # RQ's next retry
    assert list(corp.state.mass_sends) == [made]  # adopted, not a second task
    assert corp.state.stats()["api_calls"]["externalcontact/add_msg_template"] == 1


def test_a_lost_task_is_not_confused_with_another_campaigns_task_of_the_same_text(svc, corp, audience) -> None:
    """Campaign 1 went out (its tasks recorded); campaign 2, with the same text to the same
    customers, loses the answer of sh_a's first batch. Looking for that task, WeCom lists
    campaign 1's task first, with the same text and customers: it must not be adopted, being
    already another batch's."""
    first = create(svc)
    submit.run(svc, first)
    with svc.sessions() as session:
        taken = set(session.scalars(select(CampaignBatch.msgid).where(CampaignBatch.campaign_id == first)))
    svc.clock.advance(30)  # campaign 1's tasks are listed first, within the minute looked back
    second = create(svc, name="RAV4 试驾专场（再次）")
    submit.start(svc, second)
    made = submit_with_the_answer_lost(svc, corp, second)
    assert made not in taken

    assert submit.submit_batch(svc, second, "sh_a", 0) == "submitted"
    with svc.sessions() as session:
        [batch] = session.scalars(
            select(CampaignBatch).where(CampaignBatch.campaign_id == second, CampaignBatch.batch_no == 0,
                                        CampaignBatch.advisor_userid == "sh_a")
        ).all()  # fmt: skip
    assert batch.msgid == made
    assert corp.state.stats()["api_calls"]["externalcontact/add_msg_template"] == 4 + 1


def test_a_lost_task_is_found_after_a_later_claim_died_before_looking(svc, corp, audience) -> None:
    """WeCom made the task at T0 and its answer was lost; RQ's retry ten minutes later claims the
    batch and dies before it looked (its lease covers T0+600 on). The claim after that must still
    look back to T0, not only to a minute before the dead retry's claim."""
    campaign_id = create(svc)
    submit.start(svc, campaign_id)
    made = submit_with_the_answer_lost(svc, corp, campaign_id)
    svc.clock.advance(600)  # RQ's retry interval
    assert submit._claim(svc, campaign_id, "sh_a", 0) is not None  # that retry's worker dies here
    svc.clock.advance(svc.settings.JOB_TIMEOUT + 31)

    assert submit.submit_batch(svc, campaign_id, "sh_a", 0) == "submitted"
    assert list(corp.state.mass_sends) == [made]
    assert corp.state.stats()["api_calls"]["externalcontact/add_msg_template"] == 1


def test_a_campaign_whose_dealer_left_the_roster_is_cancelled_not_retried_for_ever(
    svc, corp, audience, work
) -> None:
    """A dealer named in the filter is removed from the roster before the campaign is due: its
    audience cannot be resolved any more (AudienceError). The campaign must leave ``scheduled``
    with the reason in its history, not fail its submit job on every sweep for ever."""
    from app.store.campaign_models import CampaignTransition
    from app.store.models import Dealer

    now = svc.clock.now()
    with svc.sessions.begin() as session:
        session.add(Dealer(code="XX0", name="旧店", region="east", city="上海", lat=0.0, lon=0.0,
                           models=[], territory=[], updated_at=now))  # fmt: skip
    campaign_id = create(svc, audience="dealer(SH01, XX0)")
    with svc.sessions.begin() as session:
        session.delete(session.get(Dealer, "XX0"))
    work()  # maintenance sweep: submit_campaign
    assert _state(svc, campaign_id) == states.CANCELLED
    with svc.sessions() as session:
        last = session.scalars(
            select(CampaignTransition)
            .where(CampaignTransition.campaign_id == campaign_id)
            .order_by(CampaignTransition.id.desc())
        ).first()
        assert (last.from_state, last.to_state, last.actor) == (states.SCHEDULED, states.CANCELLED, "worker")
        assert last.reason == "audience cannot be resolved: unknown dealer 'XX0'"
        assert session.scalar(select(func.count()).select_from(CampaignRecipient)) == 0
    assert corp.state.mass_sends == {}
    svc.clock.advance(svc.settings.CAMPAIGN_POLL_INTERVAL + 1)
    assert campaign_jobs.sweep(svc)["submit"] == 0


def test_a_transient_error_while_resolving_the_audience_does_not_cancel(
    svc, corp, audience, monkeypatch
) -> None:
    """Only a filter that cannot be used cancels: the database failing mid-resolve leaves the
    campaign scheduled for the next sweep."""
    from sqlalchemy.exc import OperationalError

    from app.campaigns import audience as audience_module

    def down(*_args: Any, **_kwargs: Any) -> None:
        raise OperationalError("SELECT …", {}, Exception("server closed the connection unexpectedly"))

    campaign_id = create(svc)
    with monkeypatch.context() as patch:
        patch.setattr(audience_module, "resolve_audience", down)
        with pytest.raises(OperationalError):
            submit.start(svc, campaign_id)
    assert _state(svc, campaign_id) == states.SCHEDULED
    assert len(submit.start(svc, campaign_id)) == 4  # sh_a: 5 customers, sh_b: 4; batches of 3

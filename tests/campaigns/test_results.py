"""Campaign results against the live sandbox: per-customer outcomes after the advisors confirm,
reminders to an advisor who does not (at most 3), expiry, cancel before and after confirmation,
over-limit customers, and the progress figures (API and CLI)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app.campaigns import results, states, submit
from app.store.campaign_models import Campaign, CampaignBatch, CampaignRecipient
from app.store.models import Interaction
from app.wecom.errors import WeComError
from tests.campaigns.live import (
    corp,
    create,
    customers,
    live_config,
    statuses,
    submit_killed_before_the_ledger,
    submit_with_the_answer_lost,
    wecom,
)
from workers import campaign_jobs

__all__ = ["corp", "wecom"]  # fixtures
CONFIRM = 601  # the sandbox's mass_send_confirm_delay (600 s) has passed


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom) -> dict[str, Any]:
    return live_config(app_config, wecom, CAMPAIGN_REMIND_AFTER=3600, CAMPAIGN_TASK_EXPIRY=24 * 3600)


@pytest.fixture()
def audience(svc, corp) -> dict[str, list[str]]:
    return {
        "sh_a": customers(svc, corp, "sh_a", 3, prefix="a"),
        "sh_b": customers(svc, corp, "sh_b", 2, prefix="b"),
        "sh_c": customers(svc, corp, "sh_c", 2, prefix="c"),
    }


def _state(svc, campaign_id: int) -> str:
    with svc.sessions() as session:
        return session.get(Campaign, campaign_id).state


def _kind(svc, kind: str) -> list[Interaction]:
    with svc.sessions() as session:
        return list(session.scalars(select(Interaction).where(Interaction.kind == kind)))


def test_results_after_the_confirm_delay_and_progress(svc, corp, audience, clock, client, scrm) -> None:
    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    first = results.poll(svc, campaign_id)
    assert (first.sent, first.done) == (0, False)
    with corp.state.lock:  # one of sh_b's customers deleted sh_b meanwhile
        corp.state.relations[("sh_b", audience["sh_b"][0])].deleted_by_customer = True
    clock.advance(CONFIRM)
    report = results.poll(svc, campaign_id)
    assert (report.checked, report.sent, report.done) == (3, 3, True)
    assert _state(svc, campaign_id) == states.DONE
    assert statuses(svc, campaign_id) == {"sent": 6, "not_friend": 1}
    assert len(_kind(svc, "campaign_delivered")) == 6
    [failed] = _kind(svc, "campaign_failed")
    assert failed.payload == {"campaign": campaign_id, "reason": "not_friend"}
    assert results.poll(svc, campaign_id).checked == 0  # nothing left; nothing written twice
    assert len(_kind(svc, "campaign_delivered")) == 6

    response = client.get(
        f"/api/campaigns/{campaign_id}", headers={"Authorization": "Bearer " + svc.settings.HQ_API_TOKEN}
    )
    progress = response.get_json()["progress"]
    assert (progress["targeted"], progress["sent"], progress["not_friend"]) == (7, 6, 1)
    assert progress["by_advisor"]["sh_b"]["not_friend"] == 1 and progress["by_dealer"]["SH01"]["sent"] == 6
    out = scrm("campaign", "status", str(campaign_id)).output
    assert "progress: 7 targeted" in out and "sent 6" in out


def test_an_advisor_who_does_not_confirm_is_reminded_at_most_three_times(svc, corp, audience, clock) -> None:
    corp.state.configure(mass_send_decline_userids=["sh_c"])
    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    clock.advance(CONFIRM)
    assert results.poll(svc, campaign_id).sent == 2  # sh_a, sh_b
    reminded = 0
    for _ in range(6):
        clock.advance(3600)
        reminded += results.poll(svc, campaign_id).reminded
    assert reminded == 3
    [send] = [s for s in corp.state.mass_sends.values() if s.sender == "sh_c"]
    assert len(send.reminders) == 3  # never a fourth (WeCom would answer 45009)
    with svc.sessions() as session:
        batch = session.scalars(select(CampaignBatch).where(CampaignBatch.advisor_userid == "sh_c")).one()
        assert (batch.reminded_count, batch.task_state) == (3, "unsent")
    clock.advance(24 * 3600)
    report = results.poll(svc, campaign_id)
    assert (report.expired, report.done) == (1, True)
    assert statuses(svc, campaign_id) == {"sent": 5, "not_sent": 2}


def test_cancel_before_confirmation_stops_every_task(svc, corp, audience) -> None:
    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    report = results.cancel(svc, campaign_id, actor="hq", reason="wrong text")
    assert report.cancelled == 3
    assert _state(svc, campaign_id) == states.CANCELLED
    assert all(t.state == "cancelled" for s in corp.state.mass_sends.values() for t in s.tasks.values())
    assert statuses(svc, campaign_id) == {"cancelled": 7}


def test_cancel_after_one_advisor_confirmed_keeps_what_was_sent(svc, corp, audience) -> None:
    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    corp.platform.advisor_confirms_mass_send("sh_a")
    report = results.cancel(svc, campaign_id, actor="hq")
    assert (report.sent, report.cancelled) == (1, 2)
    assert statuses(svc, campaign_id) == {"sent": 3, "cancelled": 4}


def test_cancel_while_submitting_cancels_the_batches_not_yet_sent(svc, corp, audience) -> None:
    campaign_id = create(svc)
    refs = submit.start(svc, campaign_id)
    submit.submit_batch(svc, campaign_id, refs[0].advisor_userid, refs[0].batch_no)
    results.cancel(svc, campaign_id, actor="hq")
    assert [submit.submit_batch(svc, campaign_id, r.advisor_userid, r.batch_no) for r in refs[1:]] == [
        "skipped",
        "skipped",
    ]
    assert len(corp.state.mass_sends) == 1
    assert statuses(svc, campaign_id) == {"cancelled": 7}


def test_customers_over_their_receiving_limit_are_reported(svc, corp, audience, clock) -> None:
    corp.state.configure(mass_send_receive_rule="day")  # one mass message per customer per day
    first = create(svc, name="第一次")
    submit.run(svc, first)
    clock.advance(CONFIRM)
    results.poll(svc, first)
    second = create(svc, audience="dealer(SH01) and not stage(owner)", name="第二次")
    submit.run(svc, second)
    clock.advance(CONFIRM)
    assert results.poll(svc, second).done
    assert statuses(svc, second) == {"over_limit": 7}
    reasons = {i.payload["reason"] for i in _kind(svc, "campaign_failed") if i.payload["campaign"] == second}
    assert reasons == {"over_limit"}


def test_the_worker_submits_and_polls_a_due_campaign(svc, corp, audience, clock, work) -> None:
    campaign_id = create(svc)
    work()  # maintenance sweep: submit_campaign, then the batch jobs
    assert _state(svc, campaign_id) == states.WAITING
    clock.advance(CONFIRM)
    svc.redis.delete("scrm:campaign-sweep:lock")
    for key in svc.redis.scan_iter("scrm:campaign:polled:*"):
        svc.redis.delete(key)
    work()  # the sweep enqueues poll_campaign
    assert _state(svc, campaign_id) == states.DONE
    assert statuses(svc, campaign_id) == {"sent": 7}


def test_the_api_cancels_a_waiting_campaign_and_a_job_stops_its_tasks(
    svc, corp, audience, client, work
) -> None:
    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    hq = {"Authorization": "Bearer " + svc.settings.HQ_API_TOKEN}
    response = client.post(f"/api/campaigns/{campaign_id}/cancel", headers=hq, json={"reason": "typo"})
    assert response.status_code == 200 and response.get_json()["state"] == states.CANCELLED
    work()  # the cancel job
    assert all(t.state == "cancelled" for s in corp.state.mass_sends.values() for t in s.tasks.values())
    assert statuses(svc, campaign_id) == {"cancelled": 7}
    assert client.post(f"/api/campaigns/{campaign_id}/cancel", headers=hq).status_code == 409


def test_cancel_after_a_lost_answer_finds_that_task_and_stops_it(svc, corp, audience) -> None:
    """add_msg_template's answer was lost (WeCom made the task), then the campaign is cancelled:
    the batch's retry must look the task up and cancel it in WeCom, not just mark the batch
    cancelled and leave a task the advisor can still confirm."""
    campaign_id = create(svc)
    submit.start(svc, campaign_id)
    made = submit_with_the_answer_lost(svc, corp, campaign_id)
    results.cancel(svc, campaign_id, actor="hq")
    submit.submit_batch(svc, campaign_id, "sh_a", 0)  # RQ's retry of the batch job
    assert list(corp.state.mass_sends) == [made]
    assert [t.state for t in corp.state.mass_sends[made].tasks.values()] == ["cancelled"]
    assert statuses(svc, campaign_id) == {"cancelled": 7}


def test_a_cancelled_campaigns_batch_left_by_a_dead_worker_is_looked_up_and_stopped(
    svc, corp, audience, monkeypatch, work
) -> None:
    """A worker died between WeCom's answer and the ledger write; the campaign is cancelled before
    the dead claim's lease runs out. Once it has, the sweep must still take that batch up (look
    for its task, cancel it), although the campaign is no longer submitting."""
    campaign_id = create(svc)
    submit.start(svc, campaign_id)
    submit_killed_before_the_ledger(svc, campaign_id, "sh_a", 0, monkeypatch)
    [made] = corp.state.mass_sends
    results.cancel(svc, campaign_id, actor="hq")
    svc.clock.advance(svc.settings.JOB_TIMEOUT + 31)
    work()  # maintenance: the campaign sweep
    assert [t.state for t in corp.state.mass_sends[made].tasks.values()] == ["cancelled"]
    assert statuses(svc, campaign_id) == {"cancelled": 7}
    with svc.sessions() as session:
        assert {b.status for b in session.scalars(select(CampaignBatch))} == {"submitted", "cancelled"}


def test_a_task_reported_sent_with_status_1_counts_as_sent(svc, corp, audience, clock, monkeypatch) -> None:
    """get_groupmsg_task's status for a sent task: the doc text says 2, its example shows 1
    (REFERENCE.md: accept either). A WeCom answering 1 must not leave the tasks unsent until they
    expire (every customer ``not_sent``, advisors who did send reminded)."""
    from app.sandbox import massend

    monkeypatch.setattr(massend, "TASK_SENT", 1)
    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    clock.advance(CONFIRM)
    report = results.poll(svc, campaign_id)
    assert (report.sent, report.done) == (3, True)
    assert statuses(svc, campaign_id) == {"sent": 7}


def test_a_cancel_whose_wecom_calls_failed_is_finished_by_the_sweep(svc, corp, audience, clock, work) -> None:
    """``scrm campaign cancel`` marks the campaign cancelled, then WeCom stays busy for
    cancel_groupmsg_send: the command fails and cannot be run again (the campaign is cancelled
    already). The advisors' tasks must still be cancelled later, not left for them to confirm."""
    from app.wecom.errors import WeComUnavailable

    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    busy = corp.state.faults.add({"path": "externalcontact/cancel_groupmsg_send", "errcode": -1})
    with pytest.raises(WeComUnavailable):
        results.cancel(svc, campaign_id, actor="cli")
    assert _state(svc, campaign_id) == states.CANCELLED
    corp.state.faults.remove(busy.id)
    clock.advance(60)
    work()  # maintenance: the campaign sweep
    assert all(t.state == "cancelled" for s in corp.state.mass_sends.values() for t in s.tasks.values())
    assert statuses(svc, campaign_id) == {"cancelled": 7}


def test_a_cancel_refused_for_a_task_already_sent_records_it_and_cancels_the_others(
    svc, corp, audience, clock
) -> None:
    """WeCom refuses cancel_groupmsg_send for good for sh_a's task (it was sent meanwhile): that
    refusal must not stop the other advisors' tasks from being cancelled, and sh_a's task must be
    closed with its results, not retried by every sweep for ever."""
    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    corp.platform.advisor_confirms_mass_send("sh_a")
    refused = corp.state.faults.add(
        {"path": "externalcontact/cancel_groupmsg_send", "errcode": 40058, "times": 1}
    )  # the first task of the pass: sh_a's
    report = results.cancel(svc, campaign_id, actor="hq")
    assert [r.hits for r in corp.state.faults.rules() if r.id == refused.id] == [1]
    assert (report.sent, report.cancelled) == (1, 2)
    assert statuses(svc, campaign_id) == {"sent": 3, "cancelled": 4}
    tasks = {t.userid: t.state for s in corp.state.mass_sends.values() for t in s.tasks.values()}
    assert tasks == {"sh_a": "sent", "sh_b": "cancelled", "sh_c": "cancelled"}
    clock.advance(svc.settings.CAMPAIGN_POLL_INTERVAL + 1)
    assert campaign_jobs.sweep(svc)["polls"] == 0  # nothing left to cancel


def test_a_task_wecom_cannot_read_is_skipped_until_it_expires(
    svc, corp, audience, clock, monkeypatch
) -> None:
    """get_groupmsg_task refuses sh_a's task for good (an invalid msgid): each poll goes on with
    the other tasks instead of failing, and that task ends at its expiry, so the campaign ends."""
    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    clock.advance(CONFIRM)
    with svc.sessions() as session:
        [unreadable] = session.scalars(
            select(CampaignBatch.msgid).where(CampaignBatch.advisor_userid == "sh_a")
        ).all()
    read = results.task_sent

    def task_sent(client, msgid: str, advisor_userid: str) -> bool:
        if msgid == unreadable:
            raise WeComError(40058, "invalid msgid", "externalcontact/get_groupmsg_task")
        return read(client, msgid, advisor_userid)

    monkeypatch.setattr(results, "task_sent", task_sent)
    first = results.poll(svc, campaign_id)
    assert (first.sent, first.expired, first.done) == (2, 0, False)  # sh_b and sh_c; sh_a waits
    clock.advance(24 * 3600)
    report = results.poll(svc, campaign_id)
    assert (report.expired, report.done) == (1, True)
    with svc.sessions() as session:
        rows = session.scalars(select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id))
        outcome = {(r.advisor_userid == "sh_a", r.status, r.reason) for r in rows}
    assert outcome == {(True, "not_sent", "expired"), (False, "sent", None)}


def test_a_cancel_refused_for_a_task_wecom_cannot_find_closes_it(svc, corp, audience, clock) -> None:
    """cancel_groupmsg_send and get_groupmsg_task both refuse sh_a's msgid for good (an invalid
    msgid): the task is closed as the cancel would close it, and the pass goes on."""
    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    for path in ("externalcontact/cancel_groupmsg_send", "externalcontact/get_groupmsg_task"):
        corp.state.faults.add({"path": path, "errcode": 40058, "times": 1})
    report = results.cancel(svc, campaign_id, actor="hq")
    assert (report.sent, report.cancelled) == (0, 3)
    assert statuses(svc, campaign_id) == {"cancelled": 7}
    with svc.sessions() as session:
        assert {b.task_state for b in session.scalars(select(CampaignBatch))} == {"cancelled"}


@pytest.mark.parametrize("fault", [{"errcode": 45009}, {"errcode": 41063}, {"http_status": 503}])
def test_a_cancel_that_may_still_get_through_keeps_the_task_open(svc, corp, audience, fault) -> None:
    """Busy, rate-limited, a 5xx, or 41063 (the send is still being dispatched): the task stays
    unsent for the sweep's next cancel, nothing is closed."""
    from app.wecom.errors import WeComApiFailure

    campaign_id = create(svc)
    submit.run(svc, campaign_id)
    corp.state.faults.add({"path": "externalcontact/cancel_groupmsg_send", **fault})
    with pytest.raises(WeComApiFailure):
        results.cancel(svc, campaign_id, actor="cli")
    with svc.sessions() as session:
        assert {b.task_state for b in session.scalars(select(CampaignBatch))} == {"unsent"}
    assert statuses(svc, campaign_id) == {"submitted": 7}

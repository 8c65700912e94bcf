"""Exactly once with a real worker killed mid-campaign (issue #5: "a campaign whose jobs are
retried, or whose worker is killed mid-way, resumes and never submits the same customer twice").

A real ``scrm worker`` submits a campaign of three advisors, ten batches (CAMPAIGN_BATCH_SIZE 2), to
the live sandbox and is killed with SIGKILL — worker, scheduler and work horse, no chance to clean
up — at a point the test picks through the sandbox's fault injection: one add_msg_template call (or
one result poll) is held for a while and the worker dies inside it. The held call still reaches
WeCom after the kill, as a request already on the wire would: WeCom makes the task, nobody reads
the answer. The shared clock then moves past the batch lease, a fresh ``scrm worker --burst``
resumes, and the sandbox's own records must hold every customer in exactly one task of the
campaign, one add_msg_template per batch, matching our store.

Every process reads one simulated time (CLOCK_OFFSET_KEY: app.clock.SharedOffsetClock): this test's
services, the sandbox it serves from a thread, and the workers, so the lease the test moves past is
the one the worker wrote, and the sandbox's creation times are the ones the worker reconciles by.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rq import Worker
from sqlalchemy import func, select

from app.campaigns import states
from app.clock import SharedOffsetClock
from app.redis_client import connect
from app.sandbox import SandboxServer
from app.store.campaign_models import Campaign, CampaignBatch, CampaignRecipient
from app.store.models import Interaction
from tests.campaigns.live import corp, create, customers, live_config, wecom
from tests.support.processes import WorkerProcesses, wait_for
from tests.support.subprocess_env import scrm_env
from workers import campaign_jobs
from workers.queues import BULK, DEFAULT, queue

__all__ = ["corp", "wecom"]  # fixtures

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds work horses through /proc"),
]

OFFSET_KEY = "scrm:test:clock-offset"
ADD = "externalcontact/add_msg_template"
POLL = "externalcontact/get_groupmsg_task"
BATCH_SIZE = 2
BATCHES = 10  # sh_a 7 customers → 4 batches, sh_b 5 + 2 ghosts → 4, sh_c 3 → 2
HOLD_MS = 2000  # the call a worker is killed in: long enough to kill it there on a busy machine


@pytest.fixture()
def clock(clean_state, redis_url: str) -> Iterator[SharedOffsetClock]:
    """The time every process of the test reads (after clean_state: the flush must not reset it)."""
    client = connect(redis_url)
    yield SharedOffsetClock(client, OFFSET_KEY)
    client.close()


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom: SandboxServer) -> dict[str, Any]:
    return live_config(app_config, wecom, CAMPAIGN_BATCH_SIZE=BATCH_SIZE)


@pytest.fixture()
def audience(svc, corp: SandboxServer) -> dict[str, list[str]]:
    return {
        "sh_a": customers(svc, corp, "sh_a", 7, prefix="a"),
        "sh_b": customers(svc, corp, "sh_b", 5, prefix="b"),
        # Only in our store (WeCom answers them in fail_list); their ids sort between sh_b's own,
        # so every batch holds at least one customer WeCom makes a task for.
        "ghost": customers(svc, corp, "sh_b", 2, prefix="b0000g", in_wecom=False),
        "sh_c": customers(svc, corp, "sh_c", 3, prefix="c"),
    }


@pytest.fixture()
def workers(svc, wecom: SandboxServer, tmp_path: Path) -> Iterator[WorkerProcesses]:
    env = scrm_env(
        svc, tmp_path, WECOM_API_BASE=wecom.api_base, CLOCK_OFFSET_KEY=OFFSET_KEY,
        CAMPAIGN_BATCH_SIZE=str(BATCH_SIZE), JOB_TIMEOUT=str(svc.settings.JOB_TIMEOUT),
        JOB_RETRY_INTERVALS=svc.settings.JOB_RETRY_INTERVALS,
    )  # fmt: skip
    procs = WorkerProcesses(env, tmp_path)
    try:
        yield procs
    finally:
        procs.close()


# -- what the sandbox and the store say ---------------------------------------------------------------


def calls(wecom: SandboxServer, path: str) -> int:
    with wecom.state.lock:
        return wecom.state.api_calls.get(path, 0)


def sends(wecom: SandboxServer) -> dict[str, tuple[str, list[str], list[str]]]:
    """Every add_msg_template WeCom took: msgid → (sender, customers with a task, fail_list)."""
    with wecom.state.lock:
        return {
            msgid: (send.sender, list(send.external_userids), list(send.fail_list))
            for msgid, send in wecom.state.mass_sends.items()
        }


def landed(wecom: SandboxServer) -> bool:
    """No add_msg_template call in flight: each one the sandbox received has made its mass send."""
    return calls(wecom, ADD) == len(sends(wecom))


def batches(svc, campaign_id: int) -> list[CampaignBatch]:
    with svc.sessions() as session:
        rows = session.scalars(
            select(CampaignBatch)
            .where(CampaignBatch.campaign_id == campaign_id)
            .order_by(CampaignBatch.advisor_userid, CampaignBatch.batch_no)
        ).all()
        session.expunge_all()
        return list(rows)


def batch_states(svc, campaign_id: int) -> Counter[str]:
    return Counter(b.status for b in batches(svc, campaign_id))


def campaign_state(svc, campaign_id: int) -> str:
    with svc.sessions() as session:
        return session.get(Campaign, campaign_id).state


# -- resuming and checking ------------------------------------------------------------------------------


def resume(svc, clock: SharedOffsetClock, workers: WorkerProcesses, campaign_id: int) -> None:
    """Past the lease of any claim the dead worker held, fresh burst workers finish the job."""
    clock.advance(timedelta(seconds=svc.settings.JOB_TIMEOUT + 31))  # a claim's lease: JOB_TIMEOUT + 30 s
    for _ in range(3):
        # Redis TTLs run on real time, which the clock jump does not move: the sweep lock and the
        # batches' queued markers (TTL: a lease's length) go as their expiry would take them.
        svc.redis.delete(campaign_jobs.LOCK_KEY, *svc.redis.scan_iter("scrm:campaign:queued:*"))
        workers.burst()
        if campaign_state(svc, campaign_id) != states.SUBMITTING:
            return
    raise AssertionError(f"still submitting after three burst workers: {batch_states(svc, campaign_id)}")


def assert_exactly_once(svc, wecom: SandboxServer, campaign_id: int, audience: dict[str, list[str]]) -> None:
    real = sorted(ext for advisor, ids in audience.items() if advisor != "ghost" for ext in ids)
    ghosts = sorted(audience["ghost"])
    made = sends(wecom)

    # WeCom's side: each customer handed over once, in one task; one add_msg_template per batch.
    handed = Counter(ext for _, ok, fail in made.values() for ext in ok + fail)
    assert [ext for ext, n in handed.items() if n > 1] == []
    assert sorted(handed) == sorted(real + ghosts)
    assert calls(wecom, ADD) == len(made) == BATCHES
    assert sorted(ext for _, ok, _ in made.values() for ext in ok) == real
    assert sorted(ext for _, _, fail in made.values() for ext in fail) == ghosts

    # Ours agrees: every batch submitted with the msgid of the send that holds exactly its customers.
    assert campaign_state(svc, campaign_id) == states.WAITING
    with svc.sessions() as session:
        recipients = session.scalars(
            select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id)
        ).all()
        kinds = dict(
            session.execute(
                select(Interaction.kind, func.count())
                .where(Interaction.kind.like("campaign_%"))
                .group_by(Interaction.kind)
            ).all()
        )
    rows = batches(svc, campaign_id)
    assert len(rows) == BATCHES
    assert {b.msgid for b in rows} == set(made)
    members: dict[tuple[str, int], list[str]] = {}
    for r in recipients:
        members.setdefault((r.advisor_userid, r.batch_no), []).append(r.external_userid)
    for b in rows:
        sender, ok, fail = made[b.msgid]
        assert (b.status, sender, b.fail_list) == ("submitted", b.advisor_userid, sorted(fail))
        assert sorted(ok + fail) == sorted(members[(b.advisor_userid, b.batch_no)])
        assert 0 < len(ok) <= BATCH_SIZE
    by_customer = {r.external_userid: r for r in recipients}
    assert sorted(by_customer) == sorted(real + ghosts)
    assert {ext: (r.status, r.reason) for ext, r in by_customer.items() if ext in ghosts} == {
        ext: ("failed", "fail_list") for ext in ghosts
    }
    assert {r.status for ext, r in by_customer.items() if ext not in ghosts} == {"submitted"}
    batch_msgid = {(b.advisor_userid, b.batch_no): b.msgid for b in rows}
    assert all(r.msgid == batch_msgid[(r.advisor_userid, r.batch_no)] for r in recipients)
    # Each customer's interactions were written once, whatever was retried.
    assert kinds == {"campaign_targeted": len(real) + len(ghosts), "campaign_submitted": len(real),
                     "campaign_failed": len(ghosts)}  # fmt: skip


# -- one worker, killed at a chosen point -----------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    held: int  # the add_msg_template call (1-based, in batch order) held HOLD_MS
    in_poll: bool = False  # kill in a result poll that runs after the held call, not in the call


@pytest.mark.parametrize(
    "point",
    [KillPoint(held=1), KillPoint(held=5), KillPoint(held=4, in_poll=True)],
    ids=["in-the-first-call", "in-the-fifth-call", "in-a-poll-after-four"],
)
def test_a_worker_killed_mid_campaign_resumes_and_submits_each_customer_once(
    point: KillPoint, svc, corp: SandboxServer, audience, workers: WorkerProcesses, clock
) -> None:
    faults = corp.state.faults
    if point.held > 1:
        faults.add({"path": ADD, "latency_ms": 1, "times": point.held - 1})  # the calls before go through
    faults.add({"path": ADD, "latency_ms": HOLD_MS, "times": 1})
    if point.in_poll:
        faults.add({"path": POLL, "latency_ms": HOLD_MS, "times": 1})
    campaign_id = create(svc)

    worker = workers.start()  # its first maintenance sweep enqueues submit_campaign, then the batches
    workers.wait_for(worker, f"add_msg_template call {point.held}", lambda: calls(corp, ADD) >= point.held)
    if point.in_poll:  # a poll job, queued ahead of the batches (DEFAULT before BULK), runs next
        queue(DEFAULT, svc.redis).enqueue(
            "workers.campaign_jobs.poll_campaign", campaign_id, job_id=f"campaign-{campaign_id}-poll-test"
        )
        workers.wait_for(worker, "the poll's get_groupmsg_task", lambda: calls(corp, POLL) >= 1)
    assert workers.kill(worker), "no work horse was running"
    assert calls(corp, ADD) == point.held  # it died there: no later call

    # The call the worker died in still reaches WeCom (answered into a closed socket).
    wait_for("the held call to make its mass send", lambda: landed(corp), timeout=30)
    at_kill = batch_states(svc, campaign_id)
    made_at_kill = set(sends(corp))
    assert len(made_at_kill) == point.held < BATCHES  # WeCom has some of the campaign, not all
    if point.in_poll:
        assert at_kill == Counter(submitted=point.held, pending=BATCHES - point.held)
        orphan = None
    else:
        # The batch it died in: claimed, its task made in WeCom, WeCom's answer never recorded.
        assert at_kill == Counter(submitted=point.held - 1, submitting=1, pending=BATCHES - point.held)
        [orphan] = made_at_kill - {b.msgid for b in batches(svc, campaign_id)}

    resume(svc, clock, workers, campaign_id)

    assert_exactly_once(svc, corp, campaign_id, audience)
    if orphan is not None:  # adopted (get_groupmsg_list_v2), not submitted again
        [adopted] = [b for b in batches(svc, campaign_id) if b.msgid == orphan]
        assert adopted.attempts == 2


# -- two workers on one campaign, one killed ----------------------------------------------------------------


def busy_batch_jobs(svc, pids: set[int]) -> dict[int, str]:
    """{worker pid: id of the batch job it runs} for the live workers among ``pids``."""
    found = {}
    for w in Worker.all(connection=svc.redis):
        job_id = w.get_current_job_id() if w.pid in pids else None
        if job_id and "-batch-" in job_id:
            found[w.pid] = job_id
    return found


def test_two_workers_on_one_campaign_one_killed_inside_a_call(
    svc, corp: SandboxServer, audience, workers: WorkerProcesses, clock
) -> None:
    faults = corp.state.faults
    pace = {"path": ADD, "latency_ms": 300}
    faults.add(pace)
    campaign_id = create(svc)

    first = workers.start()
    workers.wait_for(first, "the first batch call", lambda: calls(corp, ADD) >= 1)
    second = workers.start("--burst")  # joins while the batches are queued; leaves when they are done
    pids = {first.pid, second.pid}
    workers.wait_for(second, "both workers on batches", lambda: len(busy_batch_jobs(svc, pids)) == 2)

    # Hold the next call; whichever worker makes it is killed inside it.
    faults.clear()
    faults.add({"path": ADD, "latency_ms": 2 * HOLD_MS, "times": 1})
    faults.add(pace)
    wait_for("the held call", lambda: faults.rules()[0].hits)
    lease = timedelta(seconds=svc.settings.JOB_TIMEOUT + 30)

    def held_batch() -> CampaignBatch | None:
        # Claimed over a second ago: no call but the held one takes that long.
        claimed = [
            b for b in batches(svc, campaign_id)
            if b.status == "submitting" and b.lease_until - lease < clock.now() - timedelta(seconds=1)
        ]  # fmt: skip
        return claimed[0] if len(claimed) == 1 else None

    held = wait_for("the held batch", held_batch)
    running = busy_batch_jobs(svc, pids)
    [victim_pid] = [pid for pid, job_id in running.items() if f"-batch-{held.id}-" in job_id]
    victim = first if victim_pid == first.pid else second
    survivor = second if victim is first else first
    assert workers.kill(victim), "no work horse was running"
    at_kill = batch_states(svc, campaign_id)
    # Usually some batches are still pending here; on a busy machine the other worker may have
    # submitted them all while the held batch was being found, which changes nothing below.
    assert 0 < at_kill["submitted"] < BATCHES and at_kill["submitting"] >= 1

    # The survivor submits every other batch; the victim's stays claimed under its lease.
    workers.wait_for(
        survivor, "the survivor to submit the rest",
        lambda: batch_states(svc, campaign_id) == Counter(submitted=BATCHES - 1, submitting=1)
        and queue(BULK, svc.redis).count == 0 and not busy_batch_jobs(svc, {survivor.pid}),
    )  # fmt: skip
    workers.kill(survivor)
    assert [b.id for b in batches(svc, campaign_id) if b.status == "submitting"] == [held.id]
    assert calls(corp, ADD) == BATCHES
    wait_for("the held call to make its mass send", lambda: landed(corp), timeout=30)
    orphan = set(sends(corp)) - {b.msgid for b in batches(svc, campaign_id)}
    assert len(orphan) == 1

    resume(svc, clock, workers, campaign_id)
    assert_exactly_once(svc, corp, campaign_id, audience)
    assert {b.msgid for b in batches(svc, campaign_id) if b.id == held.id} == orphan  # adopted

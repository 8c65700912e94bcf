"""Campaign jobs (issue #5) and their periodic driver.

Every worker calls ``sweep_if_due`` in RQ's maintenance step (workers/worker.py); a Redis lock lets
one worker per INBOX_SWEEP_INTERVAL run it. A sweep is a few indexed queries and enqueues:

- scheduled campaigns due (``send_at ≤ now``, index ``ix_campaigns_due``) → ``submit_campaign``
  (job id ``campaign-<id>-submit``);
- submitting campaigns' batches still pending (or claimed under a lease that ran out) →
  ``submit_batch`` on the BULK queue, unless a Redis marker says one is queued (``SET NX`` for the
  job's life; correctness rests on the batch claim, not on the marker); so are a cancelled
  campaign's batches whose claim ran out (a dead job's: its task may exist in WeCom, and
  ``submit_batch`` looks it up and cancels it);
- waiting campaigns, each at most once per CAMPAIGN_POLL_INTERVAL (a Redis key) → ``poll_campaign``;
  cancelled campaigns with a task still open (their cancel did not reach WeCom: the job gave up,
  or ``scrm campaign cancel`` failed after the state change) → ``cancel_campaign``, as often.

``submit_campaign`` freezes the audience and enqueues one ``submit_batch`` per batch (job id
``campaign-<id>-batch-<batch id>-<attempt>``), so batches of different advisors go out in
parallel across workers, each call under the shared rate limiter.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from rq import Queue
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from app.campaigns import results, states, submit
from app.services import Services, services
from app.store.campaign_models import Campaign, CampaignBatch
from app.wecom.errors import RateLimited
from workers.appcontext import app_context
from workers.periodic import claim_period
from workers.queues import BULK, DEFAULT, queue, retry_policy

log = logging.getLogger(__name__)

LOCK_KEY = "scrm:campaign-sweep:lock"
QUEUED_KEY = "scrm:campaign:queued:{batch}"
POLLED_KEY = "scrm:campaign:polled:{campaign}"


def submit_campaign(campaign_id: int) -> str:
    """Job: start the submission (freeze the audience) and enqueue its batches."""
    with app_context():
        svc = services()
        refs = submit.start(svc, int(campaign_id))
        return f"campaign {campaign_id}: {enqueue_batches(svc, refs)} batch job(s) enqueued"


def submit_batch(campaign_id: int, advisor_userid: str, batch_no: int) -> str:
    """Job: submit one batch (raises when WeCom stays busy, so RQ retries it)."""
    with app_context():
        svc = services()
        try:
            return submit.submit_batch(svc, int(campaign_id), advisor_userid, int(batch_no))
        except RateLimited as exc:
            # Our own limiter knows when its next slot frees: come back then. Raising instead
            # would wait out RQ's fixed retry intervals (10 s, 30 s …) and leave the limit unused
            # (bench/campaigns.py: 58 % of the limit that way). The claim is already released.
            delay = max(exc.retry_after, 0.5)
            queue(BULK, svc.redis).enqueue_in(
                timedelta(seconds=delay),
                "workers.campaign_jobs.submit_batch",
                args=(campaign_id, advisor_userid, batch_no),
                job_id=f"campaign-{campaign_id}-{_safe(advisor_userid)}-{batch_no}-later-{uuid.uuid4().hex[:12]}",
                job_timeout=svc.settings.JOB_TIMEOUT,
                retry=retry_policy(svc.settings),
                result_ttl=3600,
                failure_ttl=7 * 24 * 3600,
            )
            return f"rate limited: batch {advisor_userid}/{batch_no} again in {delay:.1f} s"


def _safe(text: str) -> str:
    """RQ job ids take only letters, digits, - and _."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40]


def poll_campaign(campaign_id: int) -> str:
    """Job: results, reminders, expiry; done when every task is settled."""
    with app_context():
        return str(results.poll(services(), int(campaign_id)))


def cancel_campaign(campaign_id: int) -> str:
    """Job: stop the advisors' tasks of a campaign cancelled after submission."""
    with app_context():
        return str(results.cancel_tasks(services(), int(campaign_id)))


def _data(svc: Services, func: str, args: tuple, job_id: str, description: str):
    return Queue.prepare_data(
        f"workers.campaign_jobs.{func}", args=args, job_id=job_id, timeout=svc.settings.JOB_TIMEOUT,
        retry=retry_policy(svc.settings), result_ttl=3600, failure_ttl=7 * 24 * 3600, description=description,
    )  # fmt: skip


def _enqueue(svc: Services, name: str, jobs: list) -> None:
    if jobs:
        with svc.redis.pipeline() as pipe:
            queue(name, svc.redis).enqueue_many(jobs, pipeline=pipe)
            pipe.execute()


def enqueue_batches(svc: Services, refs: list[submit.BatchRef]) -> int:
    if not refs:
        return 0
    ttl = svc.settings.JOB_TIMEOUT + 30
    with svc.redis.pipeline() as pipe:
        for ref in refs:
            pipe.set(QUEUED_KEY.format(batch=ref.id), "1", nx=True, ex=ttl)
        fresh = [ref for ref, ok in zip(refs, pipe.execute(), strict=True) if ok]
    stamp = int(svc.clock.time()) if hasattr(svc.clock, "time") else 0
    jobs = [
        _data(svc, "submit_batch", (ref.campaign_id, ref.advisor_userid, ref.batch_no),
              f"campaign-{ref.campaign_id}-batch-{ref.id}-{stamp}",
              f"campaign {ref.campaign_id}: submit batch {ref.batch_no} of {ref.advisor_userid}")
        for ref in fresh
    ]  # fmt: skip
    _enqueue(svc, BULK, jobs)
    return len(jobs)


def enqueue_cancel(svc: Services, campaign_id: int) -> None:
    _enqueue(svc, DEFAULT, [_data(svc, "cancel_campaign", (campaign_id,), f"campaign-{campaign_id}-cancel",
                                  f"campaign {campaign_id}: cancel the advisors' tasks")])  # fmt: skip


def sweep(svc: Services) -> dict[str, int]:
    """One sweep (see the module notes); returns what it enqueued."""
    now = svc.clock.now()
    with svc.sessions() as session:
        due = list(
            session.scalars(
                select(Campaign.id)
                .where(Campaign.state == states.SCHEDULED, Campaign.send_at <= now)
                .limit(100)
            )
        )
        submitting = list(session.scalars(select(Campaign.id).where(Campaign.state == states.SUBMITTING)))
        waiting = list(session.scalars(select(Campaign.id).where(Campaign.state == states.WAITING)))
        # A cancelled campaign's batch still claimed by a dead job may have a task in WeCom.
        orphaned = _cancelled_with(session, CampaignBatch.status == "submitting")
        refs = [ref for cid in submitting + orphaned for ref in submit.pending_batches(session, cid, now)]
        # A cancelled campaign with a task still open: its cancel did not get through to WeCom.
        uncancelled = _cancelled_with(session, CampaignBatch.task_state == "unsent")
    _enqueue(svc, DEFAULT, [_data(svc, "submit_campaign", (cid,), f"campaign-{cid}-submit",
                                  f"campaign {cid}: start the submission") for cid in due])  # fmt: skip
    batches = enqueue_batches(svc, refs)
    interval = svc.settings.CAMPAIGN_POLL_INTERVAL
    polls = [
        _data(svc, "poll_campaign", (cid,), f"campaign-{cid}-poll-{int(now.timestamp())}",
              f"campaign {cid}: results and reminders")
        for cid in waiting + submitting
        if svc.redis.set(POLLED_KEY.format(campaign=cid), "1", nx=True, ex=interval)
    ]  # fmt: skip
    polls += [
        _data(svc, "cancel_campaign", (cid,), f"campaign-{cid}-cancel-{int(now.timestamp())}",
              f"campaign {cid}: cancel the advisors' tasks still open")
        for cid in uncancelled
        if svc.redis.set(POLLED_KEY.format(campaign=cid), "1", nx=True, ex=interval)
    ]  # fmt: skip
    _enqueue(svc, DEFAULT, polls)
    return {"submit": len(due), "batches": batches, "polls": len(polls)}


def _cancelled_with(session: Session, batch_condition: ColumnElement[bool]) -> list[int]:
    """Cancelled campaigns with at least one batch for which ``batch_condition`` holds."""
    return list(
        session.scalars(
            select(CampaignBatch.campaign_id)
            .join(Campaign, Campaign.id == CampaignBatch.campaign_id)
            .where(Campaign.state == states.CANCELLED, batch_condition)
            .distinct()
        )
    )


def sweep_if_due(svc: Services) -> bool:
    """Run a sweep unless a worker did within INBOX_SWEEP_INTERVAL (a Redis lock)."""
    if not claim_period(svc, LOCK_KEY, svc.settings.INBOX_SWEEP_INTERVAL):
        return False
    sweep(svc)
    return True

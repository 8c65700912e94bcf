"""SOP's periodic work and its jobs.

Every worker calls ``sweep_if_due`` in RQ's maintenance step (workers/worker.py); a Redis lock
lets one worker per ``SOP_SWEEP_INTERVAL`` enqueue the sweep job (``sweep_job``, one at a time:
job id ``sop-sweep``), so the maintenance step itself stays short and a worker never stops taking
urgent jobs while a sweep reads a backlog. A sweep:

1. reads new interactions and enrolls / exits / moves (``app.sop.triggers.consume``, until the
   feed is caught up), and scans for silent customers (``scan_no_reply``);
2. selects up to ``SOP_SWEEP_BATCH`` due steps with the index-only query (``runner.due_steps``)
   and enqueues them on the default queue, ``SOP_STEPS_PER_JOB`` steps per job
   (``run_steps``, job id ``sop-<enrollment>-<step>`` of its first step). A Redis marker per step
   (``SET NX`` with the step lease's life) keeps a step that is queued or running from being
   enqueued again by the next sweeps; correctness does not rest on it: a step run claims its
   step in the store, so a step enqueued twice still runs once.

``scrm sop run-due`` runs one sweep in its own process, with the due steps run there too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app.services import Services, services
from app.sop import runner, triggers
from app.sop.runner import RunReport
from app.sop.triggers import ConsumeReport
from workers.appcontext import app_context
from workers.periodic import claim_period
from workers.queues import DEFAULT, queue, retry_policy

log = logging.getLogger(__name__)

LOCK_KEY = "scrm:sop-sweep:lock"
QUEUED_KEY = "scrm:sop:queued:{enrollment}:{step}"
RUN_STEPS = "workers.sop_jobs.run_steps"
SWEEP_JOB = "workers.sop_jobs.sweep_job"
SWEEP_JOB_ID = "sop-sweep"
_LIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def run_steps(items: list[list[int]]) -> str:
    """Job: run these (enrollment id, step index) pairs. Raises (so RQ retries the job) when a
    step failed; steps that ran are not run again by the retry."""
    with app_context():
        report = runner.run_steps(services(), [(int(e), int(s)) for e, s in items], raise_errors=True)
    return str(report)


def job_id(enrollment_id: int, step_index: int) -> str:
    return f"sop-{enrollment_id}-{step_index}"


def enqueue_steps(svc: Services, due: list[tuple[int, int]]) -> int:
    """Enqueue the due steps not already queued (by their markers); return how many were."""
    if not due:
        return 0
    settings = svc.settings
    ttl = settings.JOB_TIMEOUT + 30
    with svc.redis.pipeline() as pipe:
        for enrollment_id, step in due:
            pipe.set(QUEUED_KEY.format(enrollment=enrollment_id, step=step), "1", nx=True, ex=ttl)
        fresh = [item for item, ok in zip(due, pipe.execute(), strict=True) if ok]
    if not fresh:
        return 0
    size = settings.SOP_STEPS_PER_JOB
    jobs = [
        Queue.prepare_data(
            RUN_STEPS,
            args=([list(item) for item in chunk],),
            job_id=job_id(*chunk[0]),
            timeout=settings.JOB_TIMEOUT,
            retry=retry_policy(settings),
            result_ttl=600,
            failure_ttl=7 * 24 * 3600,
            description=f"SOP: run {len(chunk)} due step(s) from enrollment {chunk[0][0]} step {chunk[0][1]}",
        )
        for chunk in (fresh[i : i + size] for i in range(0, len(fresh), size))
    ]
    with svc.redis.pipeline() as pipe:
        queue(DEFAULT, svc.redis).enqueue_many(jobs, pipeline=pipe)
        pipe.execute()
    return len(fresh)


@dataclass
class SweepReport:
    consumed: ConsumeReport = field(default_factory=ConsumeReport)
    no_reply_enrolled: int = 0
    due: int = 0
    enqueued: int = 0
    ran: RunReport | None = None  # when the sweep ran the steps itself

    def __str__(self) -> str:
        text = f"{self.consumed}; no_reply: {self.no_reply_enrolled} enrolled; {self.due} due step(s), "
        if self.ran is not None:
            return text + f"run here: {self.ran}"
        return text + f"{self.enqueued} enqueued"


def sweep(svc: Services, *, run_here: bool = False, limit: int | None = None) -> SweepReport:
    """One sweep (see the module notes). ``run_here`` runs the due steps in this process instead
    of enqueuing them (``scrm sop run-due``)."""
    report = SweepReport()
    report.consumed = triggers.consume_all(svc)
    report.no_reply_enrolled = triggers.scan_no_reply(svc)
    limit = limit or svc.settings.SOP_SWEEP_BATCH
    with svc.sessions() as session:
        due = runner.due_steps(session, svc.clock.now(), limit)
    report.due = len(due)
    if run_here:
        report.ran = runner.run_steps(svc, due)
    else:
        report.enqueued = enqueue_steps(svc, due)
    return report


def sweep_job() -> str:
    """Job: one sweep (see the module notes)."""
    with app_context():
        return str(sweep(services()))


def _sweep_queued(svc: Services) -> bool:
    try:
        job = Job.fetch(SWEEP_JOB_ID, connection=svc.redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return False
    return job.get_status(refresh=False) in _LIVE


def sweep_if_due(svc: Services) -> bool:
    """Enqueue the sweep job unless a worker did within SOP_SWEEP_INTERVAL (a Redis lock) or the
    last one is still queued or running. True when it was enqueued."""
    if not claim_period(svc, LOCK_KEY, svc.settings.SOP_SWEEP_INTERVAL):
        return False
    if _sweep_queued(svc):
        return False
    data = Queue.prepare_data(
        SWEEP_JOB,
        job_id=SWEEP_JOB_ID,
        timeout=svc.settings.JOB_TIMEOUT,
        result_ttl=max(60, svc.settings.SOP_SWEEP_INTERVAL * 10),
        failure_ttl=24 * 3600,
        description="SOP sweep: enroll from the interaction log, enqueue due steps",
    )
    with svc.redis.pipeline() as pipe:
        queue(DEFAULT, svc.redis).enqueue_many([data], pipeline=pipe)
        pipe.execute()
    return True

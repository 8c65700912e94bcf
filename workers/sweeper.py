"""The inbox sweeper: finds stored events that have no live job (Redis was down when the
callback came, Redis lost its data, a relay or a worker died mid-way) and enqueues them again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app.services import Services
from app.store import inbox
from app.store.models import InboxStatus
from workers.periodic import claim_period
from workers.queues import enqueue_event, event_job_id, max_attempts
from workers.relay import relay_pending

log = logging.getLogger(__name__)

_LIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
LOCK_KEY = "scrm:inbox-sweeper:lock"


@dataclass
class SweepResult:
    enqueued: int = 0
    still_queued: int = 0
    given_up: int = 0

    def __str__(self) -> str:
        return f"enqueued {self.enqueued}, already queued {self.still_queued}, given up {self.given_up}"


def _job_is_live(connection: redis.Redis, job_id: str) -> bool:
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return False
    return job.get_status(refresh=False) in _LIVE


def sweep(svc: Services, *, force: bool = False, batch: int = 500) -> SweepResult:
    """One pass. ``force`` (``scrm inbox drain``) skips the grace period given to fresh rows;
    a row held by a worker whose lease has not expired is never taken from it."""
    result = SweepResult()
    connection = svc.redis
    # First the notices still waiting for a relay: their rows have a job on the way, and must
    # not look jobless below (a second job would only find its row finished, but costs a run).
    relay_pending(connection, svc.settings)
    grace = timedelta(0) if force else timedelta(seconds=svc.settings.INBOX_SWEEP_GRACE)
    limit = max_attempts(svc.settings)
    last_id = 0
    while True:
        with svc.sessions.begin() as session:
            rows = inbox.sweep_candidates(session, svc.clock.now(), grace, batch, after_id=last_id)
        if not rows:
            return result
        for row in rows:
            last_id = row.id
            if row.status != InboxStatus.PROCESSING and _job_is_live(
                connection, event_job_id(row.id, row.job_generation)
            ):
                result.still_queued += 1
                continue
            with svc.sessions.begin() as session:
                if row.attempts >= limit:
                    inbox.mark_failed(
                        session, row.id, f"gave up after {row.attempts} attempts", svc.clock.now()
                    )
                    result.given_up += 1
                    continue
                generation = inbox.bump_generation(session, row.id, row.job_generation, svc.clock.now())
            if generation is None:  # someone else re-enqueued it meanwhile
                continue
            # A late add may still have a live welcome code: let it jump the queue.
            urgent = row.event_type.endswith(":add_external_contact")
            enqueue_event(connection, svc.settings, row.id, generation, urgent=urgent)
            result.enqueued += 1
        if len(rows) < batch:
            return result


def sweep_if_due(svc: Services) -> SweepResult | None:
    """Run a sweep unless another worker ran one within the sweep interval (a Redis lock)."""
    if not claim_period(svc, LOCK_KEY, svc.settings.INBOX_SWEEP_INTERVAL):
        return None
    result = sweep(svc)
    if result.enqueued or result.given_up:
        log.warning("inbox sweep: %s", result)
    return result

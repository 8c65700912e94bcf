"""The RQ worker ``scrm worker`` runs: RQ's own Worker (work horses, scheduler, registries) plus
an inbox sweep in RQ's periodic maintenance step, so stored events without a live job are
enqueued again within INBOX_SWEEP_INTERVAL without another process to deploy."""

from __future__ import annotations

import logging

from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer

import workers.jobs  # noqa: F401  (imported before forking, so no work horse imports it again)
from app.services import Services
from workers.campaign_jobs import sweep_if_due as campaign_sweep_if_due
from workers.lead_jobs import sweep_if_due as lead_sweep_if_due
from workers.queues import WORKER_QUEUES, queue
from workers.sop_jobs import sweep_if_due as sop_sweep_if_due
from workers.sweeper import sweep_if_due

log = logging.getLogger(__name__)


class _SweepsInbox:
    services: Services

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[misc]
        try:
            sweep_if_due(self.services)
        except Exception:  # a failed sweep must not stop the worker; the next tick tries again
            log.exception("inbox sweep failed")
        try:
            lead_sweep_if_due(self.services)  # leads a crash left unassigned or without their card
        except Exception:
            log.exception("lead sweep failed")
        try:
            sop_sweep_if_due(self.services)  # SOP: queue the sweep job once per SOP_SWEEP_INTERVAL
        except Exception:
            log.exception("SOP sweep failed")
        try:
            campaign_sweep_if_due(self.services)  # campaigns: due submissions, batches, result polls
        except Exception:
            log.exception("campaign sweep failed")


class ScrmWorker(_SweepsInbox, Worker):
    """Forks a work horse per job (a crashing or timed-out job cannot take the worker down)."""


class ScrmSimpleWorker(_SweepsInbox, SimpleWorker):
    """Runs jobs in its own process: for tests and for debugging a job under a debugger."""


def build_worker(
    svc: Services, queue_names: tuple[str, ...] = WORKER_QUEUES, *, simple: bool = False
) -> Worker:
    interval = max(5, svc.settings.INBOX_SWEEP_INTERVAL)
    worker_class = ScrmSimpleWorker if simple else ScrmWorker
    worker = worker_class(
        [queue(name, svc.redis) for name in queue_names],
        connection=svc.redis,
        serializer=JSONSerializer,
        maintenance_interval=interval,
        # RQ blocks on dequeue for worker_ttl - 15 s; keep that no longer than the sweep interval.
        worker_ttl=interval + 15,
    )
    worker.services = svc
    return worker

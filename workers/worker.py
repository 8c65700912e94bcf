"""The RQ worker ``scrm worker`` runs: RQ's own Worker (work horses, scheduler, registries) plus
the relay of the callback path's notices to jobs (workers/relay.py) and an inbox sweep in RQ's
periodic maintenance step, so stored events without a live job are enqueued again within
INBOX_SWEEP_INTERVAL without another process to deploy."""

from __future__ import annotations

import logging
from typing import Any

from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer

import workers.jobs  # noqa: F401  (imported before forking, so no work horse imports it again)
from app.redis_client import connect
from app.services import Services
from workers.campaign_jobs import sweep_if_due as campaign_sweep_if_due
from workers.lead_jobs import sweep_if_due as lead_sweep_if_due
from workers.queues import WORKER_QUEUES, queue
from workers.relay import RelayThread, relay_pending
from workers.sop_jobs import sweep_if_due as sop_sweep_if_due
from workers.sweeper import sweep_if_due

log = logging.getLogger(__name__)


class _SweepsInbox:
    services: Services

    def work(self, burst: bool = False, **kwargs: Any) -> bool:
        # In burst mode the relay runs before each dequeue only (below): every notice pushed
        # before the queues ran dry becomes a job, then the worker exits as RQ's would.
        relay = None
        if not burst:
            # Its own connection: RQ's dequeue blocks the worker's for seconds at a time.
            relay = RelayThread(connect(self.services.redis_url), self.services.settings)
            relay.start()
        try:
            return super().work(burst=burst, **kwargs)  # type: ignore[misc]
        finally:
            if relay is not None:
                relay.stop()
                relay.connection.close()

    def unsubscribe(self) -> None:
        # RQ's own calls PubSubWorkerThread.stop(), which since redis-py 8.2 joins the thread
        # without a bound; after the UNSUBSCRIBE that thread can sit out RQ's 60 s sleep_time
        # waiting for a subscription again, so `scrm worker --burst` took a minute to exit about
        # one run in four. Same steps, with the wait bounded (redis-py before 8.2: no timeout).
        thread = getattr(self, "pubsub_thread", None)
        if not thread:
            return
        self.pubsub.unsubscribe()  # type: ignore[attr-defined]
        try:
            thread.stop(timeout=1)
        except TypeError:
            thread.stop()
            thread.join(timeout=1)
        self.pubsub.close()  # type: ignore[attr-defined]

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        self._relay()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[misc]

    def _relay(self) -> None:
        try:
            relay_pending(self.services.redis, self.services.settings)
        except Exception:  # the relay thread and the sweeper try again; the worker goes on
            log.exception("relay of inbox notices failed")

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

"""Group commit for the callback path: store in the inbox, then notify the workers, for all
concurrent requests of one process at once.

Each request must have its event committed (and its notice pushed) before WeCom gets an answer.
Under load many request threads of a process want that at the same moment; one of them (the
leader) writes every pending event in one transaction and pushes the new ones' notices in one
Redis round trip (the worker's relay turns them into RQ jobs: workers/relay.py), while the
others wait for it. One event alone costs what it did
before; a busy process pays one commit and one round trip for many. Measured with
bench/callbacks.py: server CPU per request 1.0 → 0.75 ms, p99 31 → 17 ms.
No background thread: nothing to restart after gunicorn forks, nothing left behind at exit.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from app.store import inbox
from workers.relay import push_notices

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

MAX_BATCH = 200
# After Redis fails, stop trying it for a moment: the events are already stored and the sweeper
# will enqueue them, so there is no point making every callback wait on a dead socket.
REDIS_BACKOFF_SECONDS = 2.0


class NotStored(Exception):
    """The event could not be committed: the caller must not acknowledge it."""


@dataclass
class _Ticket:
    row: dict[str, Any]
    urgent: bool = False
    stored: inbox.Stored | None = None
    error: Exception | None = None
    done: bool = False


@dataclass
class Ingester:
    svc: Services
    _pending: list[_Ticket] = field(default_factory=list)
    _flushing: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def ingest(self, urgent: bool = False, **row: Any) -> inbox.Stored:
        """Store one callback (``inbox.store_delivery``'s keyword arguments) and push its notice,
        from which the worker's relay enqueues its job (on the high queue when ``urgent``).
        Returns once the row is committed; raises NotStored when it could not be, so the caller
        answers with an error and WeCom delivers it again."""
        ticket = _Ticket(row, urgent)
        with self._cond:
            self._pending.append(ticket)
        while True:
            with self._cond:
                while self._flushing and not ticket.done:
                    self._cond.wait()
                if not ticket.done:
                    self._flushing = True
                    batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            if ticket.done:
                if ticket.stored is None:
                    raise NotStored(str(ticket.error or "batch failed")) from ticket.error
                return ticket.stored
            try:
                self._flush(batch)
            except Exception as exc:  # a bug in the notify step: stored rows stay stored (sweeper)
                log.exception("inbox batch of %d: %s", len(batch), type(exc).__name__)
            finally:
                with self._cond:
                    for item in batch:
                        item.done = True
                    self._flushing = False
                    self._cond.notify_all()

    def _flush(self, batch: list[_Ticket]) -> None:
        try:
            self._store(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            # One bad row must not fail its neighbours: store them one by one instead.
            for item in batch:
                try:
                    self._store([item])
                except Exception as single:
                    item.error = single
        new = [item for item in batch if item.stored is not None and item.stored.is_new]
        self._notify([item.stored for item in new], {item.stored.id for item in new if item.urgent})

    def _store(self, items: list[_Ticket]) -> None:
        results = inbox.commit_deliveries(self.svc.ingest_engine, [item.row for item in items])
        # Only now, after the commit: a rolled-back row must never be acknowledged.
        for item, stored in zip(items, results, strict=True):
            item.stored = stored

    def _notify(self, stored: list[inbox.Stored], urgent: set[int]) -> None:
        svc = self.svc
        if not stored or svc.clock.time() < svc.enqueue_paused_until:
            return
        try:
            # A notice, not the RQ job itself: the worker's relay makes the job (workers/relay.py).
            push_notices(svc.web_redis, [(s.id, s.job_generation) for s in stored], urgent)
        except redis.RedisError as exc:
            svc.enqueue_paused_until = svc.clock.time() + REDIS_BACKOFF_SECONDS
            log.error(
                "inbox %s stored but not enqueued (Redis: %s); the sweeper will enqueue them",
                ", ".join(str(s.id) for s in stored),
                type(exc).__name__,
            )

"""Group commit for the callback path's RQ enqueues.

Each stored callback needs an RQ job before WeCom gets its answer. Under load many request
threads of one process want that at the same moment; one of them (the leader) writes all
pending jobs in one Redis pipeline (RQ's ``enqueue_many``) while the others wait for it. One
job alone costs what it did before; a busy process pays one round trip for many jobs.
No background thread: nothing to restart after gunicorn forks, nothing left behind at exit.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import redis

from app.config import Settings
from workers.queues import enqueue_events

log = logging.getLogger(__name__)

MAX_BATCH = 200


@dataclass
class _Ticket:
    inbox_id: int
    generation: int
    done: bool = False
    ok: bool = False


@dataclass
class EnqueueBatcher:
    connection: redis.Redis
    settings: Settings
    wait_seconds: float = 1.0
    _pending: list[_Ticket] = field(default_factory=list)
    _flushing: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def enqueue(self, inbox_id: int, generation: int) -> bool:
        """Enqueue the event's job; True once it is in Redis. False when Redis failed (or the
        leader did not finish within ``wait_seconds``): the event stays in the inbox for the
        sweeper, so the caller answers WeCom either way."""
        ticket = _Ticket(inbox_id, generation)
        deadline = time.monotonic() + self.wait_seconds  # a lock wait bound, not business time
        with self._cond:
            self._pending.append(ticket)
        while True:
            with self._cond:
                while self._flushing and not ticket.done:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._cond.wait(remaining):
                        return False
                if ticket.done:
                    return ticket.ok
                self._flushing = True
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            ok = self._write(batch)
            with self._cond:
                for item in batch:
                    item.done, item.ok = True, ok
                self._flushing = False
                self._cond.notify_all()

    def _write(self, batch: list[_Ticket]) -> bool:
        try:
            enqueue_events(
                self.connection, self.settings, [(item.inbox_id, item.generation) for item in batch]
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            ids = ", ".join(str(item.inbox_id) for item in batch)
            log.error(
                "inbox %s stored but not enqueued (Redis unreachable: %s); the sweeper will enqueue them",
                ids,
                type(exc).__name__,
            )
            return False
        return True

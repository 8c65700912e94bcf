"""From the callback path's notices to RQ jobs.

The callback path must answer WeCom fast, and RQ's enqueue is the most expensive thing it did:
one job is a Job object and a hash of some twenty fields packed in Python, in a MULTI of four
commands (about 0.4 ms of CPU, a third of a callback's cost; bench/callbacks.py). RQ has no
cheaper way to create a job, so the callback path now only appends ``<inbox id>:<generation>``
to a Redis list (one RPUSH per group commit), and every ``scrm worker`` runs a relay that turns
those notices into the same RQ jobs as before (``enqueue_events``: same ids, queues, retries).

Nothing can be lost on the way: the event is committed to the inbox before its notice is
pushed. A notice popped by a relay that dies before it enqueues (or that Redis loses) leaves a
``received`` row without a job, which the inbox sweeper enqueues after INBOX_SWEEP_GRACE, as it
does for a callback stored while Redis was down. A notice relayed after the sweeper already
re-enqueued its row only adds a job that finds the row finished (jobs claim their row first).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable

import redis

from app.config import Settings
from workers.queues import enqueue_events

log = logging.getLogger(__name__)

# The high list first: BLPOP serves its keys in order, and a welcome code lives about 20 s.
HIGH_NOTICES = "scrm:inbox:notices:high"
EVENT_NOTICES = "scrm:inbox:notices"
NOTICE_KEYS = (HIGH_NOTICES, EVENT_NOTICES)
RELAY_BATCH = 500
WAIT_SECONDS = 1  # a relay thread's BLPOP; short, so it notices that its worker stopped


def notice(inbox_id: int, generation: int) -> str:
    return f"{inbox_id}:{generation}"


def push_notices(
    connection: redis.Redis, items: Iterable[tuple[int, int]], urgent: Collection[int] = ()
) -> None:
    """The callback path's half: one RPUSH per list, in one round trip. Ids in ``urgent`` go to
    the high list (a customer's add with a welcome code, an advisor's text to the bot)."""
    high, normal = [], []
    for inbox_id, generation in items:
        (high if inbox_id in urgent else normal).append(notice(inbox_id, generation))
    if high and normal:
        with connection.pipeline(transaction=False) as pipe:
            pipe.rpush(HIGH_NOTICES, *high)
            pipe.rpush(EVENT_NOTICES, *normal)
            pipe.execute()
    elif high or normal:
        connection.rpush(HIGH_NOTICES if high else EVENT_NOTICES, *(high or normal))


def _parse(raw: bytes | str) -> tuple[int, int] | None:
    text = raw.decode() if isinstance(raw, bytes) else raw
    inbox_id, _, generation = text.partition(":")
    if not (inbox_id.isdigit() and generation.isdigit()):
        return None
    return int(inbox_id), int(generation)


def _enqueue(connection: redis.Redis, settings: Settings, key: str, raw: list[bytes | str]) -> int:
    pairs = []
    for item in raw:
        parsed = _parse(item)
        if parsed is None:  # only a hand-made entry gets here; the sweeper covers the row anyway
            log.error("relay: dropped a malformed notice on %s: %r", key, item[:40])
            continue
        pairs.append(parsed)
    if pairs:
        urgent = {inbox_id for inbox_id, _ in pairs} if key == HIGH_NOTICES else set()
        enqueue_events(connection, settings, pairs, urgent)
    return len(pairs)


def relay_pending(connection: redis.Redis, settings: Settings, limit: int = RELAY_BATCH) -> int:
    """Turn every notice waiting now into its job; returns how many. LPOP with a count is
    atomic, so relays in several workers never take the same notice."""
    moved = 0
    for key in NOTICE_KEYS:
        while True:
            raw = connection.lpop(key, limit)
            if not raw:
                break
            moved += _enqueue(connection, settings, key, raw)
            if len(raw) < limit:
                break
    return moved


def pending_notices(connection: redis.Redis) -> dict[str, int]:
    """Notices not yet relayed, per list (``high``, ``events``)."""
    with connection.pipeline(transaction=False) as pipe:
        for key in NOTICE_KEYS:
            pipe.llen(key)
        high, events = pipe.execute()
    return {"high": int(high), "events": int(events)}


class RelayThread(threading.Thread):
    """Waits on the notice lists (BLPOP) and relays as soon as one arrives, so a worker blocked
    in RQ's own dequeue still gets a new event's job within milliseconds."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        super().__init__(name="scrm-relay", daemon=True)
        self.connection = connection
        self.settings = settings
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                popped = self.connection.blpop(list(NOTICE_KEYS), timeout=WAIT_SECONDS)
                if popped is None:
                    continue
                key, raw = popped
                key = key.decode() if isinstance(key, bytes) else key
                _enqueue(self.connection, self.settings, key, [raw])
                relay_pending(self.connection, self.settings)
            except redis.RedisError as exc:
                # What was popped and not enqueued is left to the sweeper (see the module doc).
                log.error("relay: Redis error (%s); retrying in a second", type(exc).__name__)
                self.stopping.wait(1.0)
            except Exception:
                log.exception("relay failed; retrying in a second")
                self.stopping.wait(1.0)

    def stop(self, timeout: float = WAIT_SECONDS + 2) -> None:
        self.stopping.set()
        self.join(timeout)

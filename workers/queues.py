"""Queue names and how jobs are put on them. Jobs are referenced by dotted path so the web
process never imports handler code."""

from __future__ import annotations

import weakref
from collections.abc import Collection

from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.queue import EnqueueData
from rq.serializers import JSONSerializer

from app.config import Settings

HIGH = "scrm-high"  # time-critical WeCom calls (a welcome code lives about 20 s)
EVENTS = "scrm-events"  # one job per stored callback
DEFAULT = "scrm-default"
BULK = "scrm-bulk"  # mass sends, imports
WORKER_QUEUES = (HIGH, EVENTS, DEFAULT, BULK)

PROCESS_EVENT = "workers.jobs.process_event"


_queues: weakref.WeakKeyDictionary[Redis, dict[str, Queue]] = weakref.WeakKeyDictionary()


def queue(name: str, connection: Redis) -> Queue:
    """One Queue object per connection and name: a Queue asks the server for its version once,
    and the callback path should not pay for that on every event."""
    per_connection = _queues.setdefault(connection, {})
    if name not in per_connection:
        per_connection[name] = Queue(name, connection=connection, serializer=JSONSerializer)
    return per_connection[name]


def event_job_id(inbox_id: int, generation: int) -> str:
    """Each (re-)enqueue of an inbox row gets a new generation, so a job id is never reused and
    RQ's registries never confuse a dead attempt with a live one."""
    return f"inbox-{inbox_id}-{generation}"


def retry_policy(settings: Settings) -> Retry:
    intervals = settings.retry_intervals
    return Retry(max=len(intervals), interval=intervals)


def event_job(settings: Settings, inbox_id: int, generation: int) -> EnqueueData:
    return Queue.prepare_data(
        PROCESS_EVENT,
        args=(inbox_id,),
        job_id=event_job_id(inbox_id, generation),
        timeout=settings.JOB_TIMEOUT,
        retry=retry_policy(settings),
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        description=f"process inbox event {inbox_id}",
    )


def enqueue_events(
    connection: Redis, settings: Settings, items: list[tuple[int, int]], urgent: Collection[int] = ()
) -> list[Job]:
    """Enqueue jobs for (inbox id, generation) pairs in one pipeline: one round trip for all.
    Ids in ``urgent`` go to the high queue: a customer's add carries a welcome code that WeCom
    honours for about 20 s, so it must not wait behind a backlog of other events."""
    groups = {HIGH: [i for i in items if i[0] in urgent], EVENTS: [i for i in items if i[0] not in urgent]}
    jobs: list[Job] = []
    with connection.pipeline() as pipe:
        for name, group in groups.items():
            if group:
                jobs += queue(name, connection).enqueue_many(
                    [event_job(settings, inbox_id, generation) for inbox_id, generation in group],
                    pipeline=pipe,
                )
        pipe.execute()
    return jobs


def enqueue_event(
    connection: Redis, settings: Settings, inbox_id: int, generation: int, urgent: bool = False
) -> Job:
    return enqueue_events(connection, settings, [(inbox_id, generation)], [inbox_id] if urgent else ())[0]


def max_attempts(settings: Settings) -> int:
    return 1 + len(settings.retry_intervals)

"""The callback path's group-commit enqueuer under concurrency, and with Redis gone."""

from __future__ import annotations

import threading
import time

from app.callbacks.enqueue import EnqueueBatcher
from app.redis_client import connect
from tests.support.redis_proxy import RedisProxy
from workers.queues import EVENTS, event_job_id, queue


def _hammer(batcher: EnqueueBatcher, threads: int, per_thread: int) -> list[bool]:
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def run(t: int) -> None:
        start.wait()
        for n in range(per_thread):
            ok = batcher.enqueue(t * 1000 + n, 1)
            with lock:
                results.append(ok)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    return results


def test_concurrent_enqueues_each_land_once(svc) -> None:
    batcher = EnqueueBatcher(svc.web_redis, svc.settings)
    flushes = []
    original = batcher._write
    batcher._write = lambda batch: flushes.append(len(batch)) or original(batch)  # type: ignore[method-assign]

    results = _hammer(batcher, threads=16, per_thread=25)

    assert results == [True] * 400
    job_ids = queue(EVENTS, svc.redis).job_ids
    assert len(job_ids) == 400
    assert set(job_ids) == {event_job_id(t * 1000 + n, 1) for t in range(16) for n in range(25)}
    assert sum(flushes) == 400
    assert len(flushes) < 400  # concurrent requests shared pipelines


def test_with_redis_gone_every_caller_gets_false_promptly(svc, redis_url: str) -> None:
    proxy = RedisProxy(redis_url)
    try:
        client = connect(proxy.url, fail_fast=True)
        batcher = EnqueueBatcher(client, svc.settings)
        began = time.monotonic()
        results = _hammer(batcher, threads=8, per_thread=3)
        assert results == [False] * 24
        assert time.monotonic() - began < 10
        assert queue(EVENTS, svc.redis).count == 0
        client.close()
    finally:
        proxy.close()

"""The relay from the callback path's notices to RQ jobs (workers/relay.py): each notice becomes
its job once, on the right queue, even with several relays at once; a notice lost on the way
is made good by the sweeper; a running `scrm worker` relays within moments."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from app.redis_client import connect
from app.store import inbox
from tests.conftest import FIXTURES
from tests.support.subprocess_env import ROOT, scrm_env
from workers.queues import EVENTS, HIGH, event_job_id, queue
from workers.relay import (
    EVENT_NOTICES,
    HIGH_NOTICES,
    RelayThread,
    pending_notices,
    push_notices,
    relay_pending,
)
from workers.sweeper import sweep

ADD = (FIXTURES / "events/change_external_contact__add_external_contact.xml").read_text()
CHURN = (FIXTURES / "events/change_external_contact__del_follow_user.xml").read_text()


def _status(svc, inbox_id: int) -> str:
    with svc.sessions() as session:
        return session.get(inbox.InboxEvent, inbox_id).status


def _only_row(svc) -> inbox.InboxEvent:
    with svc.sessions() as session:
        [row] = session.query(inbox.InboxEvent).all()
        return row


def test_notices_become_jobs_on_their_queues(svc) -> None:
    push_notices(svc.redis, [(1, 1), (2, 1), (3, 2)], urgent={2})
    assert pending_notices(svc.redis) == {"high": 1, "events": 2}

    assert relay_pending(svc.redis, svc.settings) == 3

    assert pending_notices(svc.redis) == {"high": 0, "events": 0}
    assert queue(HIGH, svc.redis).job_ids == [event_job_id(2, 1)]
    assert sorted(queue(EVENTS, svc.redis).job_ids) == [event_job_id(1, 1), event_job_id(3, 2)]
    assert relay_pending(svc.redis, svc.settings) == 0  # nothing twice


def test_a_callback_is_processed_by_a_burst_worker_through_the_relay(poster, svc, work) -> None:
    assert poster.post(CHURN).data == b"success"
    row = _only_row(svc)
    assert pending_notices(svc.redis) == {"high": 0, "events": 1}
    assert queue(EVENTS, svc.redis).count == 0  # the web process made no RQ job

    work()

    assert _status(svc, row.id) == "done"
    assert pending_notices(svc.redis) == {"high": 0, "events": 0}


def test_relays_running_at_once_enqueue_each_notice_once(svc) -> None:
    items = [(n, 1) for n in range(1, 2001)]
    for start in range(0, len(items), 100):
        push_notices(svc.redis, items[start : start + 100])
    moved: list[int] = []
    barrier = threading.Barrier(4)

    def relay() -> None:
        barrier.wait()
        moved.append(relay_pending(svc.redis, svc.settings, limit=37))

    threads = [threading.Thread(target=relay) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sum(moved) == 2000
    job_ids = queue(EVENTS, svc.redis).job_ids
    assert len(job_ids) == 2000
    assert set(job_ids) == {event_job_id(n, 1) for n, _ in items}


def test_a_malformed_notice_is_dropped_and_the_rest_relayed(svc, caplog) -> None:
    svc.redis.rpush(EVENT_NOTICES, "7:1", "garbage", "8:x", "9:1")
    assert relay_pending(svc.redis, svc.settings) == 2
    assert sorted(queue(EVENTS, svc.redis).job_ids) == [event_job_id(7, 1), event_job_id(9, 1)]
    assert "malformed notice" in caplog.text


def test_a_notice_lost_on_the_way_is_made_good_by_the_sweeper(poster, svc, clock, work) -> None:
    assert poster.post(CHURN).data == b"success"
    row = _only_row(svc)
    # A relay popped the notice and died before it enqueued the job.
    assert svc.redis.lpop(EVENT_NOTICES) is not None

    assert sweep(svc).enqueued == 0  # within the grace period a row is left alone
    clock.advance(timedelta(seconds=svc.settings.INBOX_SWEEP_GRACE + 1))
    assert sweep(svc).enqueued == 1
    work()

    assert _status(svc, row.id) == "done"
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (1, 1)


def test_the_sweeper_relays_waiting_notices_instead_of_enqueueing_their_rows_again(
    poster, svc, clock
) -> None:
    assert poster.post(ADD).data == b"success"
    row = _only_row(svc)
    clock.advance(timedelta(seconds=svc.settings.INBOX_SWEEP_GRACE + 1))

    result = sweep(svc)

    assert (result.enqueued, result.still_queued) == (0, 1)
    assert queue(HIGH, svc.redis).job_ids == [event_job_id(row.id, row.job_generation)]


def test_a_relay_thread_relays_as_soon_as_a_notice_arrives(svc) -> None:
    relay = RelayThread(connect(svc.redis_url), svc.settings)
    relay.start()
    try:
        time.sleep(0.2)  # blocked in BLPOP by now
        push_notices(svc.redis, [(41, 1)], urgent={41})
        deadline = time.monotonic() + 3
        while queue(HIGH, svc.redis).count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue(HIGH, svc.redis).job_ids == [event_job_id(41, 1)]
        assert svc.redis.llen(HIGH_NOTICES) == 0
    finally:
        relay.stop()
        relay.connection.close()
    assert not relay.is_alive()


@pytest.mark.slow
def test_a_running_worker_processes_a_callback_within_moments(poster, svc, tmp_path: Path) -> None:
    env = scrm_env(svc, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(2)  # the worker is up and blocked in RQ's dequeue
        assert poster.post(CHURN).data == b"success"
        row = _only_row(svc)
        deadline = time.monotonic() + 20
        while _status(svc, row.id) != "done" and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        assert _status(svc, row.id) == "done"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_worker_stops_listening_at_once(svc) -> None:
    """RQ's unsubscribe joined its pub/sub thread without a bound (redis-py 8.2), and once that
    thread has read the UNSUBSCRIBE reply it waits RQ's 60 s for a subscription: a burst worker
    took a minute to exit whenever the thread won that race (here it always does)."""
    from workers.worker import build_worker

    worker = build_worker(svc, simple=True)
    worker.subscribe()
    deadline = time.monotonic() + 5
    while not worker.pubsub.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.pubsub.subscribed
    send_unsubscribe = worker.pubsub.unsubscribe

    def unsubscribe_then_lose_the_race(*args):
        send_unsubscribe(*args)
        time.sleep(0.3)  # the thread reads the reply and goes back to waiting before stop()

    worker.pubsub.unsubscribe = unsubscribe_then_lose_the_race
    started = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - started < 5

"""A worker killed mid-job (SIGKILL, no chance to clean up) loses nothing and writes nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.store import interactions
from app.store.models import InboxEvent, InboxStatus
from tests.conftest import FIXTURES
from tests.support.subprocess_env import ROOT, scrm_env
from workers.sweeper import sweep

CHURN = (FIXTURES / "events/change_external_contact__del_follow_user.xml").read_text()


@pytest.mark.slow
def test_worker_killed_mid_job(poster, work, svc, clock, tmp_path: Path) -> None:
    poster.post(CHURN)
    marker = tmp_path / "handler-started"
    env = scrm_env(svc, tmp_path, JOB_TIMEOUT="30", SLOW_HANDLER_MARKER=str(marker))
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.slow_worker"], cwd=ROOT, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert worker.poll() is None, "the worker exited before reaching the handler"
            assert time.monotonic() < deadline, "the worker never started the job"
            time.sleep(0.05)
        # RQ runs each job in a work horse in its own session: kill it and the worker, mid-transaction.
        os.kill(int(marker.read_text()), signal.SIGKILL)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    with svc.sessions() as session:
        row = session.scalars(select(InboxEvent)).one()
        assert row.status == InboxStatus.PROCESSING and row.attempts == 1
        assert interactions.count(session) == 0  # the killed transaction wrote nothing

    # Nothing happens while the dead worker's lease runs; after it, the sweeper takes the row back.
    assert sweep(svc).enqueued == 0
    clock.advance(row.lease_until.timestamp() - clock.time() + 1)
    assert sweep(svc).enqueued == 1
    work()

    with svc.sessions() as session:
        row = session.scalars(select(InboxEvent)).one()
        assert row.status == InboxStatus.DONE and row.attempts == 2
        assert interactions.count(session) == 1

"""A real `scrm worker` sweeps the inbox as part of RQ's maintenance: an event stored while Redis
was unreachable is processed by the next worker without anyone running `scrm inbox drain`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.store import inbox, interactions
from tests.conftest import FIXTURES
from tests.support.subprocess_env import ROOT, scrm_env

CHURN = (FIXTURES / "events/change_external_contact__del_follow_user.xml").read_text()


@pytest.mark.slow
def test_a_worker_picks_up_events_that_were_never_enqueued(poster, svc, tmp_path: Path) -> None:
    svc.enqueue_paused_until = float("inf")  # as after a Redis failure: store, do not enqueue
    assert poster.post(CHURN).data == b"success"
    with svc.sessions() as session:
        assert inbox.status_counts(session)["received"] == 1

    env = scrm_env(svc, tmp_path, INBOX_SWEEP_GRACE="0")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker", "--burst"],
        cwd=ROOT,
        env=env,
        timeout=120,
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]

    with svc.sessions() as session:
        assert inbox.status_counts(session)["done"] == 1
        assert interactions.count(session) == 1

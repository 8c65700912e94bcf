"""A small corp for the bot and sidebar tests: one dealer, two advisors, their customers, the
test cards of tests/fixtures/bot/ loaded, and enrollments made through app.sop.enrollment."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from rq import Queue
from rq.exceptions import DequeueTimeout
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty
from sqlalchemy import update

from app.redis_client import connect
from app.sop import enrollment, versions
from app.sop.card import Card
from app.sop.loader import read_card
from app.store import customers
from app.store.models import RelationStatus
from app.store.sop_models import SopEnrollment
from tests.conftest import FIXTURES
from tests.support import roster as rows
from workers.queues import WORKER_QUEUES, queue
from workers.relay import RelayThread
from workers.worker import build_worker

CARDS = FIXTURES / "bot"
ADVISORS = {"sh_a": "王芳", "sh_b": "李强"}
DEALER_NAME = "一汽丰田上海浦东店"


def card(name: str) -> Card:
    card_file = read_card(CARDS / name)
    assert card_file.card is not None, card_file.problems
    return card_file.card


def load_cards(svc, names: tuple[str, ...] = ("buying.yaml", "service.yaml", "owners-only.yaml")) -> None:
    for name in names:
        outcome = versions.store_card(svc, card(name), str(Path("tests/fixtures/bot") / name))
        assert outcome.status in ("new", "unchanged"), outcome


def roster(svc) -> None:
    now = svc.clock.now()
    rows.store(
        svc,
        [rows.dealer("SH01", now, name=DEALER_NAME, lat=31.22, lon=121.54, models=["RAV4", "COROLLA"])],
        [
            rows.advisor(userid, now, name=name, languages=["普通话"], segments=["prospect"])
            for userid, name in ADVISORS.items()
        ],
    )


def customer(
    svc,
    external_userid: str,
    name: str,
    advisor: str,
    *,
    minutes_ago: int = 0,
    status: str = RelationStatus.ACTIVE,
    profile: dict[str, Any] | None = None,
) -> None:
    """A customer the advisor follows (added ``minutes_ago``), with a prospect profile."""
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        customers.upsert_customer(
            session,
            external_userid,
            now,
            name=name,
            profile=profile or {"model": "RAV4", "segment": "prospect", "dealer": "SH01"},
        )
        customers.upsert_relation(
            session,
            advisor,
            external_userid,
            now - timedelta(minutes=minutes_ago),
            dealer_code="SH01",
            status=status,
        )


def enroll(svc, card_id: str, external_userid: str, advisor: str, next_step: int | None = None) -> int:
    """Enroll through app.sop.enrollment (manual trigger); optionally move it to ``next_step``."""
    outcome = enrollment.try_enroll(svc, card_id, external_userid, "manual", advisor_userid=advisor)
    assert outcome.status == "enrolled", outcome
    assert outcome.enrollment is not None
    if next_step is not None:
        with svc.sessions.begin() as session:
            session.execute(
                update(SopEnrollment)
                .where(SopEnrollment.id == outcome.enrollment.id)
                .values(next_step=next_step)
            )
    return outcome.enrollment.id


def corp(svc) -> None:
    """Roster, cards, and: sh_a follows 王建国 (enrolled in buying-questions, at step 2) and 陈静
    (enrolled in service-care); sh_b follows 刘洋 (enrolled in nothing)."""
    roster(svc)
    load_cards(svc)
    customer(svc, "wm_wang", "王建国", "sh_a", minutes_ago=30)
    customer(svc, "wm_chen", "陈静", "sh_a", minutes_ago=10, profile={"model": "RAV4", "segment": "owner"})
    customer(svc, "wm_liu", "刘洋", "sh_b", minutes_ago=5)
    enroll(svc, "buying-questions", "wm_wang", "sh_a", next_step=2)
    enroll(svc, "service-care", "wm_chen", "sh_a")


class WorkerThread:
    """Takes jobs off the SCRM queues and runs them, in a thread (RQ's own worker wants the main
    thread for its signal handlers)."""

    def __init__(self, app) -> None:
        self.app = app
        self.stop = threading.Event()
        self.ran = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        svc = app.extensions["scrm"]
        # The callback path leaves notices; the relay a real worker runs turns them into jobs.
        self.relay = RelayThread(connect(svc.redis_url), svc.settings)

    def _run(self) -> None:
        svc = self.app.extensions["scrm"]
        with self.app.app_context():
            worker = build_worker(svc, simple=True)  # execute_job keeps RQ's statuses and results
            worker.death_penalty_class = TimerDeathPenalty  # SIGALRM works in the main thread only
            queues = [queue(name, svc.redis) for name in WORKER_QUEUES]
            while not self.stop.is_set():
                try:
                    found = Queue.dequeue_any(queues, 1, connection=svc.redis, serializer=JSONSerializer)
                except DequeueTimeout:
                    continue
                if found is not None:
                    worker.execute_job(*found)
                    self.ran += 1

    def __enter__(self) -> WorkerThread:
        self.relay.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.relay.stop()
        self.relay.connection.close()
        self.thread.join(timeout=30)
        # A thread still running would take jobs off the queues of the tests that follow.
        assert not self.thread.is_alive(), "the test's worker thread did not stop within 30 s"

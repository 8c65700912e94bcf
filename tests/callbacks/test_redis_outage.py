"""Redis unreachable: callbacks are still stored and answered; the sweeper enqueues them later."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app import create_app
from app.store import inbox
from tests.conftest import FIXTURES, CallbackPoster, invoke_cli, run_worker
from tests.support.redis_proxy import RedisProxy
from workers.sweeper import sweep

CHURN = (FIXTURES / "events/change_external_contact__del_follow_user.xml").read_text()


@pytest.fixture()
def proxy(redis_url: str):
    proxy = RedisProxy(redis_url)
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture()
def proxied_app(app_config, clean_state, proxy: RedisProxy):
    application = create_app({**app_config, "REDIS_URL": proxy.url})
    yield application
    application.extensions["scrm"].close()


def _customer(n: int) -> str:
    return CHURN.replace("woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA", f"wmCustomer{n:020d}")


def test_redis_down_then_back(proxied_app, proxy: RedisProxy, wecom, clock) -> None:
    svc = proxied_app.extensions["scrm"]
    poster = CallbackPoster(proxied_app.test_client(), wecom)

    proxy.cut()
    for n in range(3):
        response = poster.post(_customer(n))
        assert response.status_code == 200 and response.data == b"success"
    with svc.sessions() as session:
        assert inbox.status_counts(session)["received"] == 3

    proxy.start()
    # Within the back-off window the callback path does not even try Redis...
    poster.post(_customer(3))
    # ...after it, enqueueing works again.
    clock.advance(5)
    poster.post(_customer(4))

    # The sweeper (run by every worker every INBOX_SWEEP_INTERVAL) finds the 4 events with no job.
    clock.advance(timedelta(seconds=svc.settings.INBOX_SWEEP_GRACE + 1))
    result = sweep(svc)
    assert result.enqueued == 4
    assert result.still_queued == 1

    run_worker(proxied_app)
    with svc.sessions() as session:
        counts = inbox.status_counts(session)
    assert counts["done"] == 5 and counts["received"] == 0


def test_a_fresh_event_is_left_to_its_own_job_by_the_sweeper(app, poster, svc, clock) -> None:
    poster.post(CHURN)
    assert sweep(svc).enqueued == 0  # within the grace period: its own job is queued
    clock.advance(timedelta(seconds=svc.settings.INBOX_SWEEP_GRACE + 1))
    result = sweep(svc)
    assert result.enqueued == 0 and result.still_queued == 1  # its job is still in the queue


def test_drain_enqueues_immediately_and_only_once(app, proxy: RedisProxy, proxied_app, wecom) -> None:
    svc = proxied_app.extensions["scrm"]
    poster = CallbackPoster(proxied_app.test_client(), wecom)
    proxy.cut()
    poster.post(_customer(1))
    proxy.start()
    first = invoke_cli(proxied_app, "inbox", "drain")
    assert first.exit_code == 0, first.output
    assert "enqueued 1" in first.output
    second = invoke_cli(proxied_app, "inbox", "drain")
    assert "enqueued 0, already queued 1" in second.output
    run_worker(proxied_app)
    with svc.sessions() as session:
        assert inbox.status_counts(session)["done"] == 1

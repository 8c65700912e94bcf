"""process_event: retries, the failed state and its CLI, exactly-once writes, lease fencing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.store import inbox, interactions
from app.store.models import InboxEvent, InboxStatus
from tests.conftest import FIXTURES
from workers import dispatch
from workers.jobs import process_event
from workers.queues import EVENTS, HIGH, enqueue_event, queue
from workers.relay import relay_pending

# The customer deleting an advisor: with no roster its handler calls no WeCom API, so these tests
# exercise the job machinery alone.
CHURN = (FIXTURES / "events/change_external_contact__del_follow_user.xml").read_text()
CHURN_TYPE = "change_external_contact:del_follow_user"


@pytest.fixture()
def flaky_churn_handler(monkeypatch):
    """Replace the churn handler with one that fails a set number of times."""
    state = {"failures_left": 0, "calls": 0}
    original = dispatch.HANDLERS[CHURN_TYPE]

    def handler(ctx):
        state["calls"] += 1
        if state["failures_left"]:
            state["failures_left"] -= 1
            raise RuntimeError("WeCom said no")
        original(ctx)

    monkeypatch.setitem(dispatch.HANDLERS, CHURN_TYPE, handler)
    return state


def _row(svc) -> InboxEvent:
    with svc.sessions() as session:
        return session.scalars(select(InboxEvent)).one()


def _interaction_count(svc) -> int:
    with svc.sessions() as session:
        return interactions.count(session)


def test_a_failing_handler_is_retried_then_succeeds(poster, work, svc, flaky_churn_handler) -> None:
    flaky_churn_handler["failures_left"] = 2  # JOB_RETRY_INTERVALS="0,0": two retries allowed
    poster.post(CHURN)
    work()
    row = _row(svc)
    assert row.status == InboxStatus.DONE
    assert row.attempts == 3 and flaky_churn_handler["calls"] == 3
    assert _interaction_count(svc) == 1


def test_retries_used_up_end_failed_and_visible(poster, work, svc, scrm, flaky_churn_handler) -> None:
    flaky_churn_handler["failures_left"] = 99
    poster.post(CHURN)
    work()
    row = _row(svc)
    assert row.status == InboxStatus.FAILED
    assert row.attempts == 3
    assert "RuntimeError: WeCom said no" in row.last_error
    assert _interaction_count(svc) == 0

    status = json.loads(scrm("inbox", "status", "--json").output)
    assert status["failed"] == 1 and status["done"] == 0
    listed = scrm("inbox", "failed").output
    assert str(row.id) in listed and CHURN_TYPE in listed and "WeCom said no" in listed
    as_json = [json.loads(line) for line in scrm("inbox", "failed", "--json").output.splitlines()]
    assert as_json[0]["id"] == row.id and as_json[0]["attempts"] == 3

    flaky_churn_handler["failures_left"] = 0  # the cause is fixed; an operator retries
    assert "re-enqueued 1" in scrm("inbox", "retry").output
    work()
    row = _row(svc)
    assert row.status == InboxStatus.DONE and row.attempts == 1
    assert _interaction_count(svc) == 1
    assert "no failed events" in scrm("inbox", "failed").output


def test_retry_of_a_row_that_is_not_failed_leaves_it_alone(poster, work, svc, scrm) -> None:
    poster.post(CHURN)
    work()
    result = scrm("inbox", "retry", str(_row(svc).id))
    assert "re-enqueued 0" in result.output
    assert _row(svc).status == InboxStatus.DONE


def test_a_job_that_runs_twice_writes_once(poster, work, svc) -> None:
    poster.post(CHURN)
    row = _row(svc)
    # The same event enqueued again (a second generation, as the sweeper would after a lost ack).
    enqueue_event(svc.redis, svc.settings, row.id, row.job_generation + 1)
    relay_pending(svc.redis, svc.settings)  # and the callback's own job
    assert queue(HIGH, svc.redis).count + queue(EVENTS, svc.redis).count == 2
    work()
    assert _row(svc).attempts == 1
    assert _interaction_count(svc) == 1


def test_handler_writes_are_idempotent_even_if_the_handler_runs_again(app, poster, work, svc) -> None:
    poster.post(CHURN)
    work()
    # Force a second full run of the handler (as if the row had been reopened by hand).
    with svc.sessions.begin() as session:
        session.execute(update(InboxEvent).values(status=InboxStatus.RECEIVED))
    with app.app_context():
        assert process_event(_row(svc).id) == InboxStatus.DONE
    assert _interaction_count(svc) == 1


def test_a_row_held_by_a_live_worker_is_not_taken(app, poster, svc, clock) -> None:
    poster.post(CHURN)
    row_id = _row(svc).id
    lease = timedelta(seconds=60)
    with svc.sessions.begin() as session:
        assert inbox.claim(session, row_id, clock.now(), lease) == 1
    with app.app_context():
        assert process_event(row_id) == "skipped"
    clock.advance(61)  # that worker died: its lease ran out
    with app.app_context():
        assert process_event(row_id) == InboxStatus.DONE
    assert _row(svc).attempts == 2
    assert _interaction_count(svc) == 1


def test_fencing_a_slow_attempt_cannot_finish_after_a_newer_one(poster, svc, clock) -> None:
    poster.post(CHURN)
    row_id = _row(svc).id
    lease = timedelta(seconds=60)
    with svc.sessions.begin() as session:
        slow = inbox.claim(session, row_id, clock.now(), lease)
    clock.advance(61)
    with svc.sessions.begin() as session:
        fast = inbox.claim(session, row_id, clock.now(), lease)
    assert (slow, fast) == (1, 2)
    with svc.sessions.begin() as session:
        assert inbox.finish(session, row_id, fast, InboxStatus.DONE, None, clock.now())
    with svc.sessions.begin() as session:
        assert not inbox.finish(session, row_id, slow, InboxStatus.DONE, None, clock.now())


def test_unknown_event_types_are_ignored_with_a_reason(poster, work, svc) -> None:
    poster.post(CHURN.replace("del_follow_user", "some_future_change"))
    work()
    row = _row(svc)
    assert row.status == InboxStatus.IGNORED
    assert "no handler" in row.status_reason and "some_future_change" in row.status_reason


def test_retry_of_an_id_named_twice_reports_nothing_left_alone(
    poster, work, svc, scrm, flaky_churn_handler
) -> None:
    flaky_churn_handler["failures_left"] = 99
    poster.post(CHURN)
    work()
    row_id = str(_row(svc).id)
    result = scrm("inbox", "retry", row_id, row_id)
    assert "re-enqueued 1" in result.output
    assert "not failed" not in result.output  # stderr is mixed in: nothing was left alone

"""Job entry points (what RQ calls by dotted path). Each is idempotent: running one twice, or
two at once, has the effect of running it once."""

from __future__ import annotations

import logging
from datetime import timedelta

from rq import get_current_job

from app.services import Services, services
from app.store import inbox
from app.store.models import InboxEvent, InboxStatus
from app.wecom.events import parse_event
from workers import dispatch
from workers.appcontext import app_context
from workers.handlers.context import HandlerContext
from workers.queues import max_attempts

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another attempt took the row over (ours ran past its lease); our writes are rolled back."""


def process_event(inbox_id: int) -> str:
    """Handle one stored callback. Returns what happened (kept by RQ as the job result)."""
    with app_context():
        return _process(services(), inbox_id)


def _process(svc: Services, inbox_id: int) -> str:
    settings = svc.settings
    lease = timedelta(seconds=settings.JOB_TIMEOUT + 30)
    with svc.sessions.begin() as session:
        attempt = inbox.claim(session, inbox_id, svc.clock.now(), lease)
    if attempt is None:
        log.info("inbox %s: already finished or held by another worker; nothing to do", inbox_id)
        return "skipped"

    try:
        with svc.sessions.begin() as session:
            row = session.get(InboxEvent, inbox_id)
            if row is None:  # claimed a moment ago, so only a manual delete gets here
                raise LookupError(f"inbox event {inbox_id} vanished after it was claimed")
            event = parse_event(row.plaintext)
            route = dispatch.route(event.event_type)
            if route.handler is not None:
                ctx = HandlerContext(inbox_id=inbox_id, event=event, session=session, services=svc)
                route.handler(ctx)
                ctx.flush()
                status, reason = InboxStatus.DONE, None
            else:
                status, reason = InboxStatus.IGNORED, route.ignored_reason
            if not inbox.finish(session, inbox_id, attempt, status, reason, svc.clock.now()):
                raise LeaseLost()
    except LeaseLost:
        log.warning("inbox %s attempt %s: lease lost to a newer attempt; rolled back", inbox_id, attempt)
        return "lease-lost"
    except Exception as exc:
        job = get_current_job()
        retries_left = job.retries_left if job is not None else 0
        final = not retries_left or attempt >= max_attempts(settings)
        with svc.sessions.begin() as session:
            inbox.record_failure(
                session, inbox_id, attempt, f"{type(exc).__name__}: {exc}", final, svc.clock.now()
            )
        log.error(
            "inbox %s attempt %s failed (%s): %s",
            inbox_id,
            attempt,
            "final" if final else "will retry",
            type(exc).__name__,
        )
        raise
    log.info("inbox %s %s: %s", inbox_id, event.event_type, status)
    return status

"""The sidebar (聊天工具栏) of the WeCom chat with a customer: the page, and its JSON API under
/sidebar/api/ — sign-in through WeCom OAuth, JS-SDK signatures, the current customer's profile,
stage, intent and cards with their quick replies, and which reply was sent.

The web process never calls WeCom: the OAuth code and the JS-SDK tickets are resolved by HIGH
jobs (workers/sidebar_jobs.py) that the request waits up to 3 s for, else it answers 202."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Request, Response, jsonify
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from werkzeug.exceptions import HTTPException

from app.services import Services
from workers.queues import HIGH, queue

sidebar = Blueprint("sidebar", __name__, url_prefix="/sidebar")

SESSION_HOURS = 8
WAIT_SECONDS = 3.0  # how long a request waits for its WeCom job
POLL_SECONDS = 0.05
RETRY_AFTER = 1
_LIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)


class SidebarSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened for the sidebar's paths only. Flask opens the session
    of every request before routing it; for the callback path that is a signing serializer built
    and thrown away per callback (about 35 us of 0.8 ms). Elsewhere the session is Flask's null
    session: empty to read, an error to write, so nothing can start relying on it by accident."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path == sidebar.url_prefix or request.path.startswith(f"{sidebar.url_prefix}/"):
            return super().open_session(app, request)
        return self.make_null_session(app)


@sidebar.record_once
def _configure(state: Any) -> None:
    """The signed session cookie that holds who signed in (Flask's session, SECRET_KEY)."""
    app = state.app
    settings = app.extensions["scrm"].settings
    app.secret_key = settings.SECRET_KEY
    app.session_interface = SidebarSessions()
    app.config.update(
        SESSION_COOKIE_NAME="scrm_sidebar",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.is_production,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )


@sidebar.errorhandler(HTTPException)
def _json_error(exc: HTTPException) -> tuple[Response, int]:
    """JSON errors, never an HTML page."""
    return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), exc.code or 500


def pending() -> Response:
    response = jsonify(status="pending", retry_after=RETRY_AFTER)
    response.status_code = 202
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def run_job(
    svc: Services,
    func: str,
    args: tuple[Any, ...],
    job_id: str,
    description: str,
    *,
    keep_finished: bool = False,
) -> Job:
    """Enqueue ``func`` on the high queue under ``job_id`` unless that job is waiting or running
    (concurrent requests share it), or finished and ``keep_finished`` (its result still holds);
    any other job of that id is replaced. Returns the job."""
    q = queue(HIGH, svc.redis)
    job = q.fetch_job(job_id)
    if job is not None:
        status = job.get_status(refresh=False)
        if status in _LIVE or (keep_finished and status == JobStatus.FINISHED):
            return job
        job.delete()
    return q.enqueue(
        func,
        args=args,
        job_id=job_id,
        job_timeout=30,
        result_ttl=300,
        failure_ttl=3600,
        description=description,
    )


def wait_for(svc: Services, job_id: str, seconds: float = WAIT_SECONDS) -> Any | None:
    """The job's return value once it finished within ``seconds``, else None."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            job = Job.fetch(job_id, connection=svc.redis, serializer=JSONSerializer)
        except NoSuchJobError:  # expired or deleted
            return None
        status = job.get_status(refresh=False)
        if status == JobStatus.FINISHED:
            return job.return_value()
        if status not in _LIVE or time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


from app.sidebar import views  # noqa: E402,F401  (registers the routes)

"""Sign-in to the sidebar: WeCom OAuth (code → userid, by a worker job), then a signed session
cookie holding the advisor's userid. Only active advisors of the roster get in, and every API
request checks that again (a deactivated advisor is out at once)."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from flask import abort, g, session
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from app.config import Settings
from app.services import Services, services
from app.sidebar import run_job, wait_for
from app.store.models import Advisor

OAUTH_JOB = "workers.sidebar_jobs.resolve_oauth_code"
AUTHORIZE_URL = "https://open.weixin.qq.com/connect/oauth2/authorize"
SESSION_ADVISOR = "advisor"
SESSION_STATE = "oauth_state"
SESSION_NEXT = "next"


def oauth_job_id(code: str) -> str:
    """One job per code (a request that got 202 and asks again finds the same job)."""
    return "sidebar-oauth-" + hashlib.sha256(code.encode()).hexdigest()[:32]


def resolve_code(svc: Services, code: str) -> dict[str, Any] | None:
    """What WeCom says about an OAuth code (``{"userid"}``, or ``{"error", ...}``), or None while
    the job has not answered within the wait."""
    job_id = oauth_job_id(code)
    run_job(svc, OAUTH_JOB, (code,), job_id, "resolve a sidebar sign-in code", keep_finished=True)
    return wait_for(svc, job_id)


def forget_code(svc: Services, code: str) -> None:
    """A code signs in once: drop its job (and result) after use."""
    with contextlib.suppress(NoSuchJobError):  # already gone
        Job.fetch(oauth_job_id(code), connection=svc.redis, serializer=JSONSerializer).delete()


def sign_in(userid: str) -> None:
    target = session.get(SESSION_NEXT)
    session.clear()
    session.permanent = True
    session[SESSION_ADVISOR] = userid
    if target:
        session[SESSION_NEXT] = target


def start_oauth(settings: Settings, next_path: str) -> str:
    """The WeCom authorize URL for a page view without a session; remembers where to go back to
    and a random state (a-zA-Z0-9, as WeCom allows) checked on the way back."""
    state = secrets.token_hex(16)
    session[SESSION_STATE] = state
    session[SESSION_NEXT] = next_path
    query = urlencode(
        {
            "appid": settings.WECOM_CORP_ID,
            "redirect_uri": settings.public_url("/sidebar/auth"),
            "response_type": "code",
            "scope": "snsapi_base",
            "state": state,
            "agentid": settings.WECOM_AGENT_ID,
        }
    )
    return f"{AUTHORIZE_URL}?{query}#wechat_redirect"


def roster_advisor(svc: Services, userid: str) -> Advisor | None:
    with svc.sessions() as db:
        advisor = db.get(Advisor, userid)
    return advisor if advisor is not None and advisor.active else None


def require_advisor(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 without a sign-in; 403 when the signed-in userid is no (longer an) active advisor.
    The advisor is ``g.advisor``."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        userid = session.get(SESSION_ADVISOR)
        if not userid:
            abort(401, description="sign in through WeCom first: open /sidebar in the WeCom client")
        advisor = roster_advisor(services(), userid)
        if advisor is None:
            session.pop(SESSION_ADVISOR, None)
            abort(403, description="only active advisors of the roster may use the sidebar")
        g.advisor = advisor
        return view(*args, **kwargs)

    return wrapper

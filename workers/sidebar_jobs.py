"""Jobs of the sidebar: the WeCom calls its requests need (the web process never calls WeCom).
Each runs on the high queue while a request waits up to 3 s for it."""

from __future__ import annotations

import logging
from typing import Any

from app.services import services
from app.sidebar import jssdk
from app.wecom.client import agent_client
from app.wecom.errors import WeComError
from workers.appcontext import app_context

log = logging.getLogger(__name__)

INVALID_CODE = frozenset({40029, 42003, 50001})  # invalid / expired / foreign-domain code


def resolve_oauth_code(code: str) -> dict[str, Any]:
    """OAuth2 code → ``{"userid": …}`` for a member, ``{"error": "not_member"}`` for anyone else,
    ``{"error": "invalid_code", "errcode": n}`` when WeCom refuses the code."""
    with app_context():
        try:
            answer = agent_client(services()).get_user_id_by_code(code)
        except WeComError as exc:
            if exc.errcode in INVALID_CODE:
                log.info("sidebar sign-in: WeCom refused the code (%s)", exc.errcode)
                return {"error": "invalid_code", "errcode": exc.errcode}
            raise
    userid = answer.get("userid") or answer.get("UserId")
    if not userid:
        log.info("sidebar sign-in by someone outside the corp")
        return {"error": "not_member"}
    return {"userid": str(userid)}


def fetch_jsapi_tickets() -> str:
    """Fetch the corp's jsapi_ticket and the app's agent_config ticket; keep them in Redis."""
    with app_context():
        svc = services()
        client = agent_client(svc)
        corp = client.get("get_jsapi_ticket")
        agent = client.get("ticket/get", params={"type": "agent_config"})
        jssdk.store(svc, corp, agent)
    log.info("JS-SDK tickets fetched (corp %ss, agent %ss)", corp.get("expires_in"), agent.get("expires_in"))
    return "stored"

"""JS-SDK signatures for the sidebar page: ``wx.config`` (the corp's jsapi_ticket) and
``wx.agentConfig`` (the app's agent_config ticket), doc 90506 / 94313.

    signature = sha1("jsapi_ticket=T&noncestr=N&timestamp=TS&url=U")

with the page URL as the browser has it, without its ``#fragment``. wechatpy's
``WeChatJSAPI.get_jsapi_signature`` computes exactly this with ``WeChatSigner`` (it sorts the four
``key=value`` strings, which puts them in this order); it is used here without a client.

Tickets live 7200 s and WeCom limits how often they may be fetched, so a worker fetches them
(workers/sidebar_jobs.py) and keeps them in Redis, shared by every web process, until 5 minutes
before they expire. The agent ticket's key names the agent (wechatpy's does not)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wechatpy.utils import WeChatSigner

from app.config import Settings
from app.services import Services
from app.sidebar import POLL_SECONDS, WAIT_SECONDS, run_job

JOB = "workers.sidebar_jobs.fetch_jsapi_tickets"
JOB_ID = "sidebar-jsapi-tickets"
EARLY_SECONDS = 300  # drop a ticket this long before WeCom expires it
JS_API_LIST = ("getCurExternalContact", "sendChatMessage", "getContext")


def _keys(settings: Settings) -> tuple[str, str]:
    corp = f"scrm:jsapi-ticket:{settings.WECOM_CORP_ID}"
    return corp, f"{corp}:agent:{settings.WECOM_AGENT_ID}"


@dataclass(frozen=True)
class Tickets:
    corp: str  # get_jsapi_ticket: wx.config
    agent: str  # ticket/get?type=agent_config: wx.agentConfig


def cached(svc: Services) -> Tickets | None:
    corp, agent = svc.redis.mget(_keys(svc.settings))
    if not corp or not agent:
        return None
    return Tickets(corp.decode(), agent.decode())


def store(svc: Services, corp: dict[str, Any], agent: dict[str, Any]) -> Tickets:
    """(Worker side.) Keep both tickets until shortly before they expire."""
    corp_key, agent_key = _keys(svc.settings)
    with svc.redis.pipeline() as pipe:
        for key, answer in ((corp_key, corp), (agent_key, agent)):
            ttl = max(60, int(answer.get("expires_in", 7200)) - EARLY_SECONDS)
            pipe.set(key, str(answer["ticket"]), ex=ttl)
        pipe.execute()
    return Tickets(str(corp["ticket"]), str(agent["ticket"]))


def tickets(svc: Services, wait: float = WAIT_SECONDS) -> Tickets | None:
    """The cached tickets; without them, a job fetches them and this waits up to ``wait``
    seconds (None if they are not there by then)."""
    found = cached(svc)
    if found is not None:
        return found
    run_job(svc, JOB, (), JOB_ID, "fetch the JS-SDK tickets")
    deadline = time.monotonic() + wait
    while found is None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        found = cached(svc)
    return found


def page_url(url: str) -> str:
    """The URL that is signed: as given, without the fragment."""
    return url.split("#", 1)[0]


def same_site(settings: Settings, url: str) -> bool:
    """Only pages of this server are signed (WeCom accepts only the app's trusted domain anyway)."""
    try:
        page, ours = urlsplit(url), urlsplit(settings.PUBLIC_BASE_URL)
    except ValueError:
        return False
    return page.scheme in ("http", "https") and bool(page.netloc) and page.netloc == ours.netloc


def signature(ticket: str, noncestr: str, timestamp: int | str, url: str) -> str:
    signer = WeChatSigner(delimiter=b"&")
    signer.add_data(f"noncestr={noncestr}", f"jsapi_ticket={ticket}", f"timestamp={timestamp}", f"url={url}")
    return signer.signature


def sign(
    settings: Settings, found: Tickets, url: str, *, timestamp: int, nonce: str | None = None
) -> dict[str, Any]:
    """What the page passes to wx.config and wx.agentConfig."""
    url = page_url(url)
    nonce = nonce or secrets.token_hex(8)
    return {
        "config": {
            "appId": settings.WECOM_CORP_ID,
            "timestamp": timestamp,
            "nonceStr": nonce,
            "signature": signature(found.corp, nonce, timestamp, url),
            "jsApiList": list(JS_API_LIST),
        },
        "agentConfig": {
            "corpid": settings.WECOM_CORP_ID,
            "agentid": settings.WECOM_AGENT_ID,
            "timestamp": timestamp,
            "nonceStr": nonce,
            "signature": signature(found.agent, nonce, timestamp, url),
            "jsApiList": list(JS_API_LIST),
        },
    }

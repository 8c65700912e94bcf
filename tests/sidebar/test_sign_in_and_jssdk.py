"""Sign-in through WeCom OAuth (the sandbox issues codes and answers auth/getuserinfo) and the
JS-SDK signatures (the sandbox issues tickets); both through worker jobs, never from the web."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import session
from flask.sessions import NullSession

from app import create_app
from app.config import REQUIRED_IN_PRODUCTION, SANDBOX_CREDENTIALS
from app.sandbox import SandboxServer
from app.sandbox.handlers import jsapi
from app.sandbox.handlers.oauth import issue_oauth_code
from app.sidebar import jssdk
from tests.sidebar.conftest import signed_in
from workers.queues import HIGH, queue

pytestmark = pytest.mark.usefixtures("corp")

VECTORS = Path("/work/shared/wecom/vectors.json")
PAGE = "http://localhost:5000/sidebar?external_userid=wm_wang"


def _code(wecom: SandboxServer, userid: str | None = None, **kwargs: Any) -> str:
    return issue_oauth_code(wecom.state, userid, **kwargs)


# -- OAuth -------------------------------------------------------------------------------------


def test_sign_in_with_a_worker_running(client, wecom: SandboxServer, worker) -> None:
    response = client.get("/sidebar/auth", query_string={"code": _code(wecom, "sh_a"), "state": "x"})
    assert response.status_code == 200, response.json
    assert response.json == {"advisor": {"userid": "sh_a", "name": "王芳", "dealer": "SH01"}}
    cookie = response.headers["Set-Cookie"]
    assert "scrm_sidebar=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # test mode serves http
    assert client.get("/sidebar/api/me").json["advisor"]["userid"] == "sh_a"
    assert client.get("/sidebar/api/customer?external_userid=wm_wang").status_code == 200


def test_without_a_worker_202_then_the_same_code_signs_in(client, wecom: SandboxServer, svc, work) -> None:
    code = _code(wecom, "sh_a")
    first = client.get("/sidebar/auth", query_string={"code": code})
    assert first.status_code == 202
    assert first.headers["Retry-After"] == "1" and first.json == {"status": "pending", "retry_after": 1}
    assert client.get("/sidebar/auth", query_string={"code": code}).status_code == 202  # one job
    assert queue(HIGH, svc.redis).count == 1
    work()
    assert client.get("/sidebar/auth", query_string={"code": code}).status_code == 200
    assert wecom.state.stats()["api_calls"]["auth/getuserinfo"] == 1


def test_a_code_signs_in_once(client, wecom: SandboxServer, worker) -> None:
    code = _code(wecom, "sh_a")
    assert client.get("/sidebar/auth", query_string={"code": code}).status_code == 200
    replay = client.application.test_client().get("/sidebar/auth", query_string={"code": code})
    assert replay.status_code == 401  # WeCom: 40029, the code was used
    assert replay.json["error"] == "unauthorized"


def test_a_bad_code_is_401(client, worker) -> None:
    response = client.get("/sidebar/auth", query_string={"code": "not-a-code"})
    assert response.status_code == 401
    assert client.get("/sidebar/api/me").status_code == 401


def test_a_member_outside_the_roster_is_403(client, wecom: SandboxServer, worker) -> None:
    response = client.get("/sidebar/auth", query_string={"code": _code(wecom, "hq_zhang")})
    assert response.status_code == 403
    assert "not an active advisor" in response.json["message"]
    assert client.get("/sidebar/api/me").status_code == 401


def test_someone_outside_the_corp_is_403(client, wecom: SandboxServer, worker) -> None:
    code = _code(wecom, external_userid="wm_wang")
    response = client.get("/sidebar/auth", query_string={"code": code})
    assert response.status_code == 403
    assert "members" in response.json["message"]


def test_no_code_is_400(client) -> None:
    assert client.get("/sidebar/auth").status_code == 400


def test_the_page_sends_a_stranger_through_oauth_and_back(client, wecom: SandboxServer, svc, worker) -> None:
    response = client.get("/sidebar?external_userid=wm_wang")
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert (target.scheme, target.netloc, target.path) == (
        "https",
        "open.weixin.qq.com",
        "/connect/oauth2/authorize",
    )
    assert target.fragment == "wechat_redirect"
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert query["appid"] == svc.settings.WECOM_CORP_ID and query["agentid"] == svc.settings.WECOM_AGENT_ID
    assert query["redirect_uri"] == svc.settings.public_url("/sidebar/auth")
    assert (query["scope"], query["response_type"]) == ("snsapi_base", "code")
    assert query["state"].isalnum()

    wrong = client.get("/sidebar/auth", query_string={"code": _code(wecom, "sh_a"), "state": "forged"})
    assert wrong.status_code == 400
    back = client.get("/sidebar/auth", query_string={"code": _code(wecom, "sh_a"), "state": query["state"]})
    assert back.status_code == 302 and back.headers["Location"] == "/sidebar?external_userid=wm_wang"
    page = client.get("/sidebar?external_userid=wm_wang")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b"getCurExternalContact" in page.data and b"sendChatMessage" in page.data


def test_only_the_sidebar_opens_a_session(client, corp) -> None:
    """The signed session is the sidebar's: a signed-in cookie means nothing to another path, and
    code outside the sidebar cannot write one (Flask's null session refuses)."""
    signed_in(client, "sh_a")
    assert client.get("/sidebar/api/me").json["advisor"]["userid"] == "sh_a"
    app = client.application
    with app.test_request_context("/sidebar/api/me"):
        assert not isinstance(session, NullSession)
    for path in ("/wecom/callback", "/api/interactions", "/sidebarx", "/"):
        with app.test_request_context(path):
            assert isinstance(session, NullSession), path
            with pytest.raises(RuntimeError):
                session["advisor"] = "sh_a"


def test_production_cookies_are_secure(app_config: dict[str, Any], clean_state: None) -> None:
    production = {key: SANDBOX_CREDENTIALS[key] for key in REQUIRED_IN_PRODUCTION}
    config = {**app_config, **production, "SCRM_MODE": "production", "SECRET_KEY": "k" * 40}
    app = create_app(config)
    try:
        assert app.config["SESSION_COOKIE_SECURE"] is True
        assert app.secret_key == "k" * 40
    finally:
        app.extensions["scrm"].close()


# -- JS-SDK ------------------------------------------------------------------------------------


def test_the_documented_signature_vector() -> None:
    vector = json.loads(VECTORS.read_text())["jssdk_signature_vectors"][0] if VECTORS.exists() else None
    vector = vector or {
        "jsapi_ticket": "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
        "noncestr": "Wm3WZYTPz0wzccnW",
        "timestamp": "1414587457",
        "url": "http://mp.weixin.qq.com?params=value",
        "expected_signature": "0f9de62fce790f9a083d5c99e95740ceb90c27ed",
    }
    got = jssdk.signature(vector["jsapi_ticket"], vector["noncestr"], vector["timestamp"], vector["url"])
    assert got == vector["expected_signature"] == "0f9de62fce790f9a083d5c99e95740ceb90c27ed"


def _sha1(ticket: str, nonce: str, timestamp: int, url: str) -> str:
    text = f"jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url}"
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - WeCom's algorithm


def test_signatures_with_the_sandbox_tickets(client, wecom: SandboxServer, svc, worker) -> None:
    response = signed_in(client, "sh_a").get("/sidebar/api/jssdk", query_string={"url": PAGE + "#cards"})
    assert response.status_code == 200, response.json
    config, agent = response.json["config"], response.json["agentConfig"]
    corp_ticket = jsapi.current_ticket(wecom.state, jsapi.CORP)
    agent_ticket = jsapi.current_ticket(wecom.state, jsapi.AGENT)
    assert corp_ticket and agent_ticket and corp_ticket != agent_ticket
    assert config["appId"] == svc.settings.WECOM_CORP_ID
    assert (agent["corpid"], agent["agentid"]) == (svc.settings.WECOM_CORP_ID, svc.settings.WECOM_AGENT_ID)
    assert config["timestamp"] == int(svc.clock.time())
    # signed without the #fragment
    assert config["signature"] == _sha1(corp_ticket, config["nonceStr"], config["timestamp"], PAGE)
    assert agent["signature"] == _sha1(agent_ticket, agent["nonceStr"], agent["timestamp"], PAGE)
    assert "getCurExternalContact" in agent["jsApiList"]

    # cached in Redis: the next page view calls WeCom for nothing
    for _ in range(3):
        assert client.get("/sidebar/api/jssdk", query_string={"url": PAGE}).status_code == 200
    calls = wecom.state.stats()["api_calls"]
    assert (calls["get_jsapi_ticket"], calls["ticket/get"]) == (1, 1)
    corp_key = f"scrm:jsapi-ticket:{svc.settings.WECOM_CORP_ID}"
    assert 7200 - jssdk.EARLY_SECONDS - 5 <= svc.redis.ttl(corp_key) <= 7200 - jssdk.EARLY_SECONDS


def test_jssdk_without_a_worker_is_202_then_200(client, svc, work) -> None:
    signed_in(client, "sh_a")
    response = client.get("/sidebar/api/jssdk", query_string={"url": PAGE})
    assert response.status_code == 202 and response.headers["Retry-After"] == "1"
    work()
    assert client.get("/sidebar/api/jssdk", query_string={"url": PAGE}).status_code == 200


@pytest.mark.parametrize(
    "url", ["", "https://evil.example.com/sidebar", "javascript:alert(1)", "http://localhost:5001/sidebar"]
)
def test_jssdk_signs_only_our_pages(client, url: str) -> None:
    response = signed_in(client, "sh_a").get("/sidebar/api/jssdk", query_string={"url": url})
    assert response.status_code == 400


# -- the sandbox's side -----------------------------------------------------------------------


def test_sandbox_oauth_and_tickets(wecom: SandboxServer) -> None:
    base = wecom.api_base
    secret = {
        "corpid": SANDBOX_CREDENTIALS["WECOM_CORP_ID"],
        "corpsecret": SANDBOX_CREDENTIALS["WECOM_AGENT_SECRET"],
    }

    def get(path: str, **params: str) -> dict[str, Any]:
        token = requests.get(base + "gettoken", params=secret, timeout=5).json()["access_token"]
        return requests.get(base + path, params={"access_token": token, **params}, timeout=5).json()

    code = requests.post(wecom.url + "/sandbox/oauth/code", json={"userid": "sh_a"}, timeout=5).json()["code"]

    assert get("auth/getuserinfo", code=code) == {"errcode": 0, "errmsg": "ok", "userid": "sh_a"}
    assert get("auth/getuserinfo", code=code)["errcode"] == 40029  # once
    legacy = get("user/getuserinfo", code=_code(wecom, "sh_b"))
    assert legacy["UserId"] == "sh_b"
    outsider = get("auth/getuserinfo", code=_code(wecom, external_userid="wm_x"))
    assert outsider["external_userid"] == "wm_x" and "userid" not in outsider
    wecom.state.clock.advance(301)
    assert get("auth/getuserinfo", code=_code(wecom, "sh_a"))["errcode"] == 0  # issued after the jump
    late = _code(wecom, "sh_a")
    wecom.state.clock.advance(301)
    assert get("auth/getuserinfo", code=late)["errcode"] == 42003

    first = get("get_jsapi_ticket")
    assert first["expires_in"] == 7200 and first["ticket"]
    assert get("get_jsapi_ticket")["ticket"] == first["ticket"]
    agent = get("ticket/get", type="agent_config")
    assert agent["expires_in"] == 7200 and agent["ticket"] != first["ticket"]
    assert get("ticket/get", type="other")["errcode"] == 40058
    wecom.state.clock.advance(7200)
    assert get("get_jsapi_ticket")["ticket"] != first["ticket"]  # a new one once expired
    bad = requests.post(wecom.url + "/sandbox/oauth/code", json={"userid": "nobody"}, timeout=5)
    assert bad.status_code == 400

"""OAuth2 sign-in of corp members (doc 91023): ``auth/getuserinfo?code=`` → userid, and the
legacy ``user/getuserinfo`` wechatpy calls (capitalised ``UserId`` / ``OpenId``).

WeCom hands the code to the page's redirect_uri after the member opens an OAuth link in the
client; the sandbox has no client, so a test or the demo gets a code for a member (or an
outsider) with ``issue_oauth_code`` or ``POST /sandbox/oauth/code {userid | external_userid}``.
A code lives 5 minutes and works once (40029 afterwards, as for an unknown code; 42003 once
expired)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify, request

from app.sandbox.control import control
from app.sandbox.errors import ERRMSG, ApiError, SandboxError
from app.sandbox.handlers.base import Call, api
from app.sandbox.runtime import current_sandbox
from app.sandbox.state import SandboxState

CODE_TTL_SECONDS = 300
ERRMSG.setdefault(40029, "invalid code")
ERRMSG.setdefault(42003, "code expired")


@dataclass
class OAuthCode:
    code: str
    userid: str | None  # a member
    external_userid: str | None  # someone outside the corp
    expires_at: float
    used: bool = False


_codes: weakref.WeakKeyDictionary[SandboxState, dict[str, OAuthCode]] = weakref.WeakKeyDictionary()


def issue_oauth_code(
    state: SandboxState, userid: str | None = None, external_userid: str | None = None
) -> str:
    """A fresh code, as if ``userid`` (a member) or ``external_userid`` (not a member) had opened
    the app's OAuth link."""
    if bool(userid) == bool(external_userid):
        raise SandboxError("give userid (a member) or external_userid (an outsider)")
    with state.lock:
        if userid and userid not in state.employees:
            raise SandboxError(f"unknown member {userid!r}")
        code = OAuthCode(
            state.ids.welcome_code(), userid, external_userid, state.clock.time() + CODE_TTL_SECONDS
        )
        _codes.setdefault(state, {})[code.code] = code
        return code.code


def _redeem(call: Call) -> OAuthCode:
    code = _codes.get(call.state, {}).get(call.text("code"))
    if code is None or code.used:
        raise ApiError(40029)
    if code.expires_at <= call.state.clock.time():
        raise ApiError(42003)
    code.used = True
    return code


@api("auth/getuserinfo", "GET")
def get_user_info(call: Call) -> dict[str, Any]:
    code = _redeem(call)
    if code.userid:
        return {"userid": code.userid}
    return {"openid": f"o{code.external_userid}", "external_userid": code.external_userid}


@api("user/getuserinfo", "GET")
def get_user_info_legacy(call: Call) -> dict[str, Any]:
    code = _redeem(call)
    if code.userid:
        return {"UserId": code.userid, "DeviceId": ""}
    return {"OpenId": f"o{code.external_userid}", "DeviceId": ""}


@control.post("/oauth/code")
def oauth_code() -> Response:
    """{userid} or {external_userid} → {code}: what WeCom would pass to the redirect_uri."""
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        raise SandboxError("the body must be a JSON object")
    state = current_sandbox().state
    return jsonify({"code": issue_oauth_code(state, body.get("userid"), body.get("external_userid"))})

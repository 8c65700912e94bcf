"""The WeCom server API (qyapi.weixin.qq.com/cgi-bin/...) as the sandbox serves it.

Every call goes through the same gate, in WeCom's order: fault rules (latency, then an injected
errcode or HTTP error page), the access token (41001 / 40014 / 42001), the per-API per-minute
limit (45009), then the handler. Answers are always JSON with errcode and errmsg, HTTP 200, as
WeCom does, except injected HTTP faults."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from app.sandbox.errors import ApiError, errmsg
from app.sandbox.faults import FaultRule
from app.sandbox.handlers import ROUTES, Call, Route
from app.sandbox.handlers.base import Upload
from app.sandbox.runtime import current_sandbox
from app.sandbox.state import SandboxState

api = Blueprint("sandbox_api", __name__, url_prefix="/cgi-bin")

GETTOKEN = "gettoken"


def _answer(state: SandboxState, path: str, errcode: int, message: str, **data: Any) -> Response:
    if errcode:
        state.count_error(path, errcode)
    return jsonify({"errcode": errcode, "errmsg": message, **data})


def _http_fault(state: SandboxState, path: str, status: int) -> Response:
    state.count_error(path, f"http_{status}")
    # What a gateway in front of WeCom answers: an HTML page, not JSON.
    page = f"<html><head><title>{status}</title></head><body><h1>{status}</h1><hr>sandbox</body></html>"
    return Response(page, status=status, mimetype="text/html")


def _apply_fault(state: SandboxState, path: str, rule: FaultRule) -> Response | None:
    if rule.latency_ms:
        state.clock.sleep(rule.latency_ms / 1000)
    if rule.http_status is not None:
        return _http_fault(state, path, rule.http_status)
    if rule.errcode is not None:
        return _answer(state, path, rule.errcode, rule.errmsg or errmsg(rule.errcode, "injected fault"))
    return None


def _check_rate(state: SandboxState, path: str) -> None:
    if not state.limiter.allow(path, state.config.rate_limit_for(path), state.clock.time()):
        raise ApiError(45009, f"{path} over {state.config.rate_limit_for(path)} calls per minute")


def _gettoken(state: SandboxState) -> dict[str, Any]:
    corpid, secret = request.args.get("corpid", ""), request.args.get("corpsecret", "")
    if not corpid:
        raise ApiError(41002)
    if corpid != state.config.corp_id:
        raise ApiError(40013)
    if not secret:
        raise ApiError(41004)
    _check_rate(state, GETTOKEN)
    app = next((a for a in state.apps.values() if a.secret == secret), None)
    if app is None:
        raise ApiError(40001)
    token, expires_in = state.issue_token(app)
    return {"access_token": token, "expires_in": expires_in}


def _json_body() -> dict[str, Any]:
    raw = request.get_data()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(47001, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(47001, "the body is not a JSON object")
    return body


def _files(route: Route) -> dict[str, Upload]:
    """The request's uploaded files, each read up to the route's limit (plus one byte, to tell a
    file that is too large), outside the state lock."""
    files = {}
    for name, storage in request.files.items():
        data = storage.stream.read(route.max_bytes + 1)
        files[name] = Upload(
            storage.filename or "",
            storage.mimetype or "",
            data[: route.max_bytes],
            truncated=len(data) > route.max_bytes,
        )
    return files


def _call(state: SandboxState, path: str) -> dict[str, Any] | Response:
    if path == GETTOKEN:
        return _gettoken(state)
    route = ROUTES.get(path)
    if route is None:
        response = _answer(state, path, 48001, errmsg(48001, f"{path} is not simulated"))
        response.status_code = 404
        return response
    if request.method != route.method:
        raise ApiError(43001 if route.method == "GET" else 43002)
    app = state.app_for_token(request.args.get("access_token", ""))
    _check_rate(state, path)
    files = _files(route) if route.multipart else {}
    body = _json_body() if request.method == "POST" and not route.multipart else {}
    args = {key: request.args.get(key, "") for key in request.args if key != "access_token"}
    with state.lock:
        try:
            return route.handler(Call(state, app, args, body, files))
        except (TypeError, ValueError) as exc:  # a field of the wrong type deep in the body
            raise ApiError(40058, type(exc).__name__) from None


@api.route("/<path:path>", methods=["GET", "POST"])
def call(path: str) -> Response:
    state = current_sandbox().state
    path = path.strip("/")
    state.count_call(path)
    rule = state.faults.pick(path)
    if rule is not None and not rule.after_effect:
        faulted = _apply_fault(state, path, rule)
        if faulted is not None:
            return faulted
    try:
        result = _call(state, path)
    except ApiError as exc:
        return _answer(state, path, exc.errcode, exc.errmsg)
    if rule is not None and rule.after_effect:  # done; the answer is what gets lost
        faulted = _apply_fault(state, path, rule)
        if faulted is not None:
            return faulted
    if isinstance(result, Response):
        return result
    return _answer(state, path, 0, "ok", **result)

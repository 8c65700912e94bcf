"""The sandbox control API under /sandbox/: what tests, the demo and benchmarks use to arrange
the corp, move time, break things on purpose, act as customers and advisors, and read back what
the app did. JSON in, JSON out; a bad request answers 400 with {"error": ...}."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request

from app.sandbox import massend
from app.sandbox.assets import ASSETS
from app.sandbox.errors import ApiError, SandboxError
from app.sandbox.platform import Emission
from app.sandbox.runtime import Sandbox, current_sandbox
from app.sandbox.state import SandboxState

control = Blueprint("sandbox_control", __name__, url_prefix="/sandbox")

PLATFORM_ACTIONS = (
    "customer_adds",
    "customer_deletes_advisor",
    "advisor_deletes_customer",
    "advisor_edits_customer",
    "advisor_texts_bot",
    "complete_transfers",
    "verify_callback_url",
)


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None and request.get_data().strip():
        raise SandboxError("the body is not JSON")
    if body is not None and not isinstance(body, dict):
        raise SandboxError("the body must be a JSON object")
    return body or {}


def _items(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """A list under ``key``, or the body itself as a single item."""
    items = body.get(key, [body] if body else [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise SandboxError(f"{key} must be a list of objects")
    return items


@control.errorhandler(ValueError)  # SandboxError, pydantic's ValidationError, bad numbers
@control.errorhandler(ApiError)
@control.errorhandler(TypeError)
def _bad_request(exc: Exception) -> tuple[Response, int]:
    return jsonify({"error": str(exc), "errcode": getattr(exc, "errcode", None)}), 400


def _emission(emission: Emission) -> dict[str, Any]:
    delivery = emission.delivery
    return {
        "event_type": emission.event_type,
        **emission.data,
        "delivery": delivery.as_dict() if hasattr(delivery, "as_dict") else {"outcome": "queued"},
    }


# -- arranging the corp ---------------------------------------------------------------------


@control.post("/reset")
def reset() -> Response:
    sandbox = current_sandbox()
    sandbox.deliverer.drain(timeout=30)
    sandbox.state.reset(keep_config=bool(_body().get("keep_config", True)))
    return jsonify({"ok": True})


@control.get("/clock")
def clock() -> Response:
    state = current_sandbox().state
    return jsonify({"time": state.clock.time(), "iso": state.clock.now().isoformat()})


@control.post("/clock/advance")
def advance() -> Response:
    state = current_sandbox().state
    seconds = float(_body().get("seconds", 0))
    if seconds < 0 or not hasattr(state.clock, "advance"):
        raise SandboxError("seconds must be >= 0, on a clock that can advance")
    state.clock.advance(seconds)  # type: ignore[attr-defined]
    return jsonify({"time": state.clock.time(), "iso": state.clock.now().isoformat()})


@control.route("/config", methods=["GET", "POST"])
def config() -> Response:
    state = current_sandbox().state
    if request.method == "POST":
        state.configure(**_body())
    return jsonify(state.config.public())


@control.route("/faults", methods=["GET", "POST", "DELETE"])
def faults() -> Response:
    book = current_sandbox().state.faults
    if request.method == "POST":
        return jsonify([book.add(item).as_dict() for item in _items(_body(), "rules")])
    if request.method == "DELETE":
        book.clear()
    return jsonify([rule.as_dict() for rule in book.rules()])


@control.delete("/faults/<int:rule_id>")
def delete_fault(rule_id: int) -> tuple[Response, int]:
    removed = current_sandbox().state.faults.remove(rule_id)
    return jsonify({"removed": removed}), 200 if removed else 404


@control.post("/tokens/invalidate")
def invalidate_tokens() -> Response:
    return jsonify({"invalidated": current_sandbox().state.invalidate_tokens()})


def _seed(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    state = sandbox.state
    unknown = set(body) - {"employees", "tag_groups", "contact_ways"}
    if unknown:
        raise SandboxError(f"unknown seed keys: {sorted(unknown)}")
    employees = [state.add_employee(**item).userid for item in body.get("employees", [])]
    groups = []
    for group in body.get("tag_groups", []):
        tags = [t if isinstance(t, dict) else {"name": t} for t in group.get("tags", [])]
        created = state.add_tags(
            group.get("group_id"), group.get("group_name", ""), tags, group.get("order", 0)
        )
        groups.append(
            {
                "group_id": created.group_id,
                "group_name": created.group_name,
                "tags": {tag.name: tag.id for tag in created.tags},
            }
        )
    ways = [
        dataclasses.asdict(state.add_contact_way({"type": 1, "scene": 2, **w}))
        for w in body.get("contact_ways", [])
    ]
    return {"employees": employees, "tag_groups": groups, "contact_ways": ways}


@control.post("/seed")
def seed() -> Response:
    """{employees: [{userid, name, department, mobile, position}], tag_groups: [{group_name,
    tags: [name | {name, order}]}], contact_ways: [{state, user, type, scene, ...}]}"""
    return jsonify(_seed(current_sandbox(), _body()))


def _seed_or_list(key: str, records: Callable[[SandboxState], Iterable[Any]]) -> Response:
    """POST seeds more of one kind (same body as /seed under ``key``); GET lists what there is."""
    sandbox = current_sandbox()
    if request.method == "POST":
        return jsonify(_seed(sandbox, {key: _items(_body(), key)})[key])
    with sandbox.state.lock:
        return jsonify([dataclasses.asdict(record) for record in records(sandbox.state)])


@control.route("/employees", methods=["GET", "POST"])
def employees() -> Response:
    return _seed_or_list("employees", lambda state: state.employees.values())


@control.route("/contact_ways", methods=["GET", "POST"])
def contact_ways() -> Response:
    return _seed_or_list("contact_ways", lambda state: state.contact_ways.values())


@control.route("/tags", methods=["GET", "POST"])
def tags() -> Response:
    return _seed_or_list("tag_groups", lambda state: state.tag_groups.values())


# -- acting as WeCom users ------------------------------------------------------------------


@control.post("/platform/<action>")
def platform_action(action: str) -> tuple[Response, int]:
    """Call the Platform method of that name with the body as keyword arguments."""
    if action not in PLATFORM_ACTIONS:
        raise SandboxError(f"unknown action {action!r}; one of {', '.join(PLATFORM_ACTIONS)}")
    result = getattr(current_sandbox().platform, action)(**_body())
    if isinstance(result, list):
        return jsonify([_emission(e) for e in result]), 200
    if isinstance(result, dict):
        return jsonify(result), 200
    return jsonify(_emission(result)), 200


@control.post("/drain")
def drain() -> Response:
    timeout = _body().get("timeout", 60)
    sandbox = current_sandbox()
    done = sandbox.deliverer.drain(timeout=float(timeout))
    return jsonify({"done": done, "pending": sandbox.deliverer.pending()})


# -- reading back ---------------------------------------------------------------------------


@control.get("/stats")
def stats() -> Response:
    sandbox = current_sandbox()
    return jsonify({**sandbox.state.stats(), "deliveries_pending": sandbox.deliverer.pending()})


@control.get("/welcome_messages")
def welcome_messages() -> Response:
    state = current_sandbox().state
    with state.lock:
        return jsonify([dataclasses.asdict(m) for m in state.welcome_messages])


@control.get("/app_messages")
def app_messages() -> Response:
    state = current_sandbox().state
    with state.lock:
        return jsonify([dataclasses.asdict(m) for m in state.app_messages])


@control.get("/customers")
def customers() -> Response:
    state = current_sandbox().state
    with state.lock:
        return jsonify(
            [
                {
                    **dataclasses.asdict(customer),
                    "follow_user": [dataclasses.asdict(r) for r in state.relations_of(ext)],
                }
                for ext, customer in state.customers.items()
            ]
        )


@control.get("/transfers")
def transfers() -> Response:
    state = current_sandbox().state
    with state.lock:
        return jsonify([dataclasses.asdict(t) for t in state.transfers.values()])


@control.get("/mass_sends")
def mass_sends() -> Response:
    """Every mass send (add_msg_template) with its tasks and per-customer results; ``?msgid=``."""
    state = current_sandbox().state
    msgid = request.args.get("msgid")
    with state.lock:
        massend.settle(state)
        sends = [s for s in state.mass_sends.values() if msgid is None or s.msgid == msgid]
        return jsonify([massend.as_dict(send) for send in sends])


@control.post("/mass_send/confirm")
def mass_send_confirm() -> Response:
    """{userid?, msgid?}: those advisors confirm their pending tasks now (neither: every pending
    task except the decliners')."""
    body = _body()
    state = current_sandbox().state
    with state.lock:
        confirmed = massend.confirm(state, userid=body.get("userid"), msgid=body.get("msgid"))
        return jsonify({"confirmed": confirmed})


@control.get("/media")
def media() -> Response:
    """Every upload (media/upload): media_id, type, filename, size, sha256, created_at, and
    whether it is still valid (3 days on the sandbox clock)."""
    state = current_sandbox().state
    with state.lock:
        now = state.now()
        return jsonify(
            [
                {**dataclasses.asdict(item), "valid": now < item.created_at + state.MEDIA_TTL}
                for item in state.media.values()
            ]
        )


@control.get("/assets/<name>")
def asset(name: str) -> Response:
    """Static files for demos and tests (app/sandbox/assets.py): ``cover.png``, a mini-program
    cover a campaign can name as its ``picurl`` on loopback."""
    if name not in ASSETS:
        abort(404)
    mimetype, make = ASSETS[name]
    return Response(make(), mimetype=mimetype, headers={"Cache-Control": "no-cache"})


@control.get("/deliveries")
def deliveries() -> Response:
    limit = request.args.get("limit", type=int)
    with_plaintext = request.args.get("plaintext") in ("1", "true")
    reports = current_sandbox().state.delivery_log.reports(limit)
    return jsonify([report.as_dict(with_plaintext) for report in reports])

"""JS-SDK tickets (doc 90506 / 94313): ``get_jsapi_ticket`` (the corp's, for wx.config) and
``ticket/get?type=agent_config`` (the app's, for wx.agentConfig). Each lives 7200 s; asking again
while it is valid returns the same ticket with what is left of its life (as tokens do)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from app.sandbox.errors import ApiError
from app.sandbox.handlers.base import Call, api
from app.sandbox.state import SandboxState

TICKET_TTL_SECONDS = 7200
CORP, AGENT = "jsapi", "agent_config"


@dataclass
class Ticket:
    ticket: str
    expires_at: float


_tickets: weakref.WeakKeyDictionary[SandboxState, dict[str, Ticket]] = weakref.WeakKeyDictionary()


def current_ticket(state: SandboxState, kind: str) -> str | None:
    """The valid ticket of ``kind`` (``jsapi`` or ``agent_config``), if one was issued."""
    with state.lock:
        ticket = _tickets.get(state, {}).get(kind)
        return ticket.ticket if ticket and ticket.expires_at > state.clock.time() else None


def _issue(call: Call, kind: str) -> dict[str, Any]:
    state, now = call.state, call.state.clock.time()
    held = _tickets.setdefault(state, {})
    ticket = held.get(kind)
    if ticket is None or ticket.expires_at <= now:
        ticket = Ticket(state.ids.access_token(), now + TICKET_TTL_SECONDS)
        held[kind] = ticket
    return {"ticket": ticket.ticket, "expires_in": int(ticket.expires_at - now)}


@api("get_jsapi_ticket", "GET")
def get_jsapi_ticket(call: Call) -> dict[str, Any]:
    return _issue(call, CORP)


@api("ticket/get", "GET")
def get_ticket(call: Call) -> dict[str, Any]:
    if call.text("type") != AGENT:
        raise ApiError(40058, "type must be agent_config")
    if call.app.agent_id is None:
        raise ApiError(301002, "an agent_config ticket needs the app's access_token")
    return _issue(call, AGENT)

"""The dispatch table: event type → handler, or the reason we deliberately do nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workers.handlers import bot, contacts, tags
from workers.handlers.context import HandlerContext

Handler = Callable[[HandlerContext], None]

HANDLERS: dict[str, Handler] = {
    "change_external_contact:add_external_contact": contacts.customer_added,
    "change_external_contact:add_half_external_contact": contacts.customer_added_unconfirmed,
    "change_external_contact:edit_external_contact": contacts.customer_edited,
    "change_external_contact:del_external_contact": contacts.advisor_deleted_customer,
    "change_external_contact:del_follow_user": contacts.customer_deleted_advisor,
    "change_external_contact:transfer_fail": contacts.transfer_failed,
    "change_external_tag:create": tags.tag_created_or_updated,
    "change_external_tag:update": tags.tag_created_or_updated,
    "change_external_tag:delete": tags.tag_deleted,
    "change_external_tag:shuffle": tags.tags_shuffled,
    "msg:text": bot.advisor_text,
}

_GROUP_CHATS = "customer group chats are outside Dealer SCRM's scope (one-to-one advisor contact only)"

IGNORED: dict[str, str] = {
    "change_external_chat:create": _GROUP_CHATS,
    "change_external_chat:update": _GROUP_CHATS,
    "change_external_chat:dismiss": _GROUP_CHATS,
}


@dataclass(frozen=True)
class Route:
    handler: Handler | None
    ignored_reason: str | None


def route(event_type: str) -> Route:
    handler = HANDLERS.get(event_type)
    if handler is not None:
        return Route(handler, None)
    reason = IGNORED.get(event_type) or f"no handler for event type {event_type!r}"
    return Route(None, reason)


def register(event_type: str, handler: Handler) -> None:
    """Add or replace a handler (extensions and tests use this; later issues fill the table)."""
    HANDLERS[event_type] = handler

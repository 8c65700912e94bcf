"""Advisors' texts to the bot (msg:text on /wecom/bot): the matching quick replies and preset
answers, as a passive reply when the callback still waits for it, else as an app message."""

from __future__ import annotations

import logging

from app.bot import answers, reply
from app.wecom.events import AppTextMessage
from workers.handlers.context import HandlerContext

log = logging.getLogger(__name__)

QUERY_MAX_CHARS = 200  # kept in the interaction
LOGGED_CHARS = 40  # never more of an advisor's words in the logs


def advisor_text(ctx: HandlerContext) -> None:
    svc = ctx.services
    message = AppTextMessage.of(ctx.event)
    # Reads only before the hand-over: on SQLite the first write would hold the write lock
    # while the callback path needs it (see workers/handlers/context.py).
    result = answers.answer(ctx.session, svc.settings, message.user_id, message.content)
    via = reply.deliver(svc, ctx.event, ctx.inbox_id, message.user_id, result.text)
    customer = result.customer.external_userid if result.customer is not None else None
    ctx.record(
        "bot_answered",
        advisor=message.user_id,
        customer=customer,
        dealer=result.dealer,
        payload={"query": message.content[:QUERY_MAX_CHARS], "hits": result.hits_payload(), "via": via},
    )
    log.info(
        "bot inbox %s: %s asked %r → %d hit(s), %s reply",
        ctx.inbox_id,
        message.user_id,
        message.content[:LOGGED_CHARS],
        len(result.hits),
        via,
    )

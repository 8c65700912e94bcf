"""Getting the bot's answer to the advisor: as the encrypted passive reply to their message's
callback when the worker has it in time, else as an app message (message/send).

The callback view and the worker meet in Redis, under a key derived from the message's dedup
key (its MsgId), so no clocks are compared and nothing depends on who comes first:

    view (before storing)   SET  scrm:bot-wait:<k>  PX (wait + margin)     "I am waiting"
    view (after storing)    BLPOP scrm:bot-reply:<k>  wait seconds         → passive reply, or
                            DEL  scrm:bot-wait:<k>                           "success"
    worker (answer ready)   PTTL scrm:bot-wait:<k> > 0 ? RPUSH the answer (EXPIRE 30 s) : send
                            poll: reply gone → the view took it (passive); wait key gone with
                            the reply still there → the view gave up; then DEL the reply:
                            1 → nobody took it → message/send; 0 → the view took it

The wait key is set before the event is stored (so before its job can run): a worker never
finds "nobody waits" while the view is about to wait. BLPOP and DEL are atomic, so exactly one
side owns the answer: it is never sent twice and never lost (short of the view dying between
taking it and answering WeCom). A duplicate delivery of the same MsgId stores nothing new and
runs no job, so it gets "success" at once; a retried job finds its answer in the effects ledger.
Redis down: the view answers "success" (and pauses enqueueing like the ingester does), the
event is swept later and its answer goes out as an app message.

A waiting view holds a web thread for up to BOT_PASSIVE_REPLY_WAIT seconds, so at most
BOT_PASSIVE_REPLY_MAX_WAITERS views of one process wait at once: when all slots are taken, the
view does not announce a wait and answers "success" at once, and the worker, finding nobody
waiting, sends the answer as an app message. A burst of advisors' texts never starves the
customer-contact callbacks of threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from app.callbacks.ingest import REDIS_BACKOFF_SECONDS
from app.store import effects
from app.wecom.client import agent_client
from app.wecom.events import CallbackEvent

if TYPE_CHECKING:
    from app.services import Services
    from app.store.inbox import Stored

log = logging.getLogger(__name__)

WAIT_KEY = "scrm:bot-wait:{}"
REPLY_KEY = "scrm:bot-reply:{}"
REPLY_TTL_SECONDS = 30
MARGIN_SECONDS = 0.5  # the worker waits this much past the view's deadline before it sends itself
POLL_SECONDS = 0.02
BLPOP_SLICE_SECONDS = 0.5  # under web_redis's 1 s socket timeout
# message/send duplicate check for the active answer: covers a job retried between the send and
# the ledger write, yet lets an advisor who asks the same again minutes later get an answer.
DUPLICATE_CHECK_SECONDS = 300
PASSIVE, ACTIVE = "passive", "active"


def handshake_id(event: CallbackEvent) -> str:
    """The meeting point of view and worker for one message (same for WeCom's retries)."""
    return hashlib.sha256(event.dedup_key.encode()).hexdigest()[:32]


def _pause_enqueueing(svc: Services) -> None:
    svc.enqueue_paused_until = svc.clock.time() + REDIS_BACKOFF_SECONDS


# -- the callback view ------------------------------------------------------------------------


@dataclass
class PassiveWait:
    """The view's side of one message: announced before storing, awaited after."""

    svc: Services
    event: CallbackEvent
    key: str
    announced: bool
    holds_slot: bool = False

    @classmethod
    def announce(cls, svc: Services, event: CallbackEvent) -> PassiveWait:
        """Say "a view waits for this message" (unless waiting is off, every waiting slot of
        this process is taken, or Redis is out)."""
        key = handshake_id(event)
        settings = svc.settings
        if settings.BOT_PASSIVE_REPLY_WAIT <= 0 or settings.BOT_PASSIVE_REPLY_MAX_WAITERS <= 0:
            return cls(svc, event, key, False)
        if svc.clock.time() < svc.enqueue_paused_until:
            return cls(svc, event, key, False)
        if not svc.passive_waiters.acquire(blocking=False):
            log.info(
                "bot: %d views already wait for replies; answering by app message",
                settings.BOT_PASSIVE_REPLY_MAX_WAITERS,
            )
            return cls(svc, event, key, False)
        wait = cls(svc, event, key, False, holds_slot=True)
        try:
            # Outlives the wait; expires by itself if the view dies.
            ttl_ms = int((settings.BOT_PASSIVE_REPLY_WAIT + MARGIN_SECONDS) * 1000)
            # NX: a concurrent delivery of the same message already waits; this one does not
            # (and so never withdraws the other's wait).
            wait.announced = bool(svc.web_redis.set(WAIT_KEY.format(key), "1", px=ttl_ms, nx=True))
        except redis.RedisError as exc:
            _pause_enqueueing(svc)
            log.warning("bot: cannot announce a passive-reply wait (Redis: %s)", type(exc).__name__)
        if not wait.announced:
            wait.release()
        return wait

    def release(self) -> None:
        """Give the waiting slot back (once; collect does it, the view's finally makes sure)."""
        if self.holds_slot:
            self.holds_slot = False
            self.svc.passive_waiters.release()

    def collect(self, stored: Stored | None, nonce: str) -> str | None:
        """The sealed passive reply if the answer arrives in time, else None ("success").
        Only a newly stored message waits: a duplicate has no job to answer it. Call it also
        when the event could not be stored (``stored`` None): it withdraws the wait."""
        if not self.announced:
            return None
        client = self.svc.web_redis
        content: str | None = None
        try:
            if stored is not None and stored.is_new:
                content = self._pop(client)
        except redis.RedisError as exc:
            log.warning(
                "bot inbox %s: passive-reply wait failed (Redis: %s)",
                stored.id if stored else "-",
                type(exc).__name__,
            )
        finally:
            with contextlib.suppress(redis.RedisError):  # else it expires by itself
                client.delete(WAIT_KEY.format(self.key))
            self.release()
        if content is None:
            return None
        now = int(time.time())
        plaintext = passive_plaintext(self.event.from_user_name, self.event.to_user_name, content, now)
        return self.svc.callback_crypto("bot").seal(plaintext, nonce=nonce, timestamp=str(now))

    def _pop(self, client: redis.Redis) -> str | None:
        """BLPOP in slices shorter than web_redis's 1 s read timeout, until the wait is over."""
        key = REPLY_KEY.format(self.key)
        deadline = time.monotonic() + self.svc.settings.BOT_PASSIVE_REPLY_WAIT
        while (left := deadline - time.monotonic()) > 0:
            try:
                popped = client.blpop([key], timeout=min(BLPOP_SLICE_SECONDS, left))
            except redis.ResponseError:  # Redis < 6 takes whole seconds only: poll instead
                popped = client.lpop(key)
                popped = (key, popped) if popped is not None else None
                if popped is None:
                    time.sleep(min(POLL_SECONDS * 2, max(left, 0)))
            if popped is not None:
                return str(json.loads(popped[1])["content"])
        return None


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def passive_plaintext(to_user: str, corp_id: str, content: str, create_time: int) -> str:
    """The passive text reply (doc 90241 / shared/wecom/events/passive_reply_text.xml)."""
    return (
        f"<xml><ToUserName>{_cdata(to_user)}</ToUserName><FromUserName>{_cdata(corp_id)}</FromUserName>"
        f"<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content>{_cdata(content)}</Content></xml>"
    )


# -- the worker -------------------------------------------------------------------------------


def deliver(svc: Services, event: CallbackEvent, inbox_id: int, userid: str, content: str) -> str:
    """Get ``content`` to ``userid``: hand it to a waiting view (passive), or send it with
    message/send (active). Once per inbox event: a retried job finds the outcome in the ledger.
    Returns PASSIVE or ACTIVE."""
    ledger = f"bot-answer:{inbox_id}"
    done = effects.recorded(svc.sessions, ledger)
    if done is not None:
        return str(done["via"])
    via = PASSIVE if _hand_over(svc, handshake_id(event), content, inbox_id) else ACTIVE
    result: dict[str, Any] = {"via": via}
    if via == ACTIVE:
        answer = send_text(svc, userid, content)
        result["msgid"] = answer.get("msgid")
    effects.record(svc.sessions, ledger, result, svc.clock.now())
    return via


def _hand_over(svc: Services, key: str, content: str, inbox_id: int) -> bool:
    """True when the waiting view took the answer."""
    r = svc.redis
    wait_key, reply_key = WAIT_KEY.format(key), REPLY_KEY.format(key)
    try:
        left_ms = r.pttl(wait_key)
        if left_ms is None or left_ms <= 0:
            return False  # nobody waits (gave up, never waited, or Redis lost the key)
        with r.pipeline() as pipe:
            pipe.rpush(reply_key, json.dumps({"content": content}, ensure_ascii=False))
            pipe.expire(reply_key, REPLY_TTL_SECONDS)
            pipe.execute()
        deadline = time.monotonic() + left_ms / 1000 + MARGIN_SECONDS
        while time.monotonic() < deadline:
            with r.pipeline(transaction=False) as pipe:
                pipe.exists(reply_key)
                pipe.exists(wait_key)
                reply_left, waiting = pipe.execute()
            if not reply_left:
                return True
            if not waiting:
                break
            time.sleep(POLL_SECONDS)
        return r.delete(reply_key) == 0
    except redis.RedisError as exc:
        # If Redis failed for us it failed for the view too: it cannot have taken the answer.
        log.warning(
            "bot inbox %s: passive hand-over failed (Redis: %s); sending", inbox_id, type(exc).__name__
        )
        return False


def send_text(svc: Services, userid: str, content: str) -> dict[str, Any]:
    """The answer as an app text message from the bot."""
    return agent_client(svc).post(
        "message/send",
        data={
            "touser": userid,
            "msgtype": "text",
            "agentid": int(svc.settings.WECOM_AGENT_ID),
            "text": {"content": content},
            "enable_duplicate_check": 1,
            "duplicate_check_interval": DUPLICATE_CHECK_SECONDS,
        },
    )

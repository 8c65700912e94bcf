"""The two callback endpoints WeCom calls. They verify, decrypt, parse, store, enqueue and answer;
nothing else happens here (WeCom waits at most 5 s, and retries whatever it thinks failed)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from app.bot.reply import PassiveWait
from app.callbacks.ingest import NotStored
from app.services import Services, services
from app.wecom.errors import BadSignature, CallbackRejected, MalformedXml, PayloadTooLarge
from app.wecom.events import CallbackEvent, parse_event, parse_xml

log = logging.getLogger(__name__)

callbacks = Blueprint("callbacks", __name__)


def _text(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def _query(name: str) -> str:
    value = request.args.get(name, "")
    if not value:
        # Without the signature parameters the request cannot be authenticated at all.
        error = BadSignature if name in ("msg_signature", "timestamp", "nonce") else CallbackRejected
        raise error(f"missing query parameter {name}")
    return value


def _reject(app_name: str, exc: CallbackRejected) -> Response:
    log.warning(
        "callback %s rejected: %s %s (from %s)", app_name, exc.status, exc.reason, request.remote_addr or "-"
    )
    return _text(exc.reason, exc.status)


def _verify_url(app_name: str) -> Response:
    try:
        crypto = services().callback_crypto(app_name)
        echo = crypto.verify_url(
            _query("msg_signature"), _query("timestamp"), _query("nonce"), _query("echostr")
        )
    except CallbackRejected as exc:
        return _reject(app_name, exc)
    log.info("callback %s: URL verified", app_name)
    return _text(echo)


def _receive(app_name: str) -> Response:
    svc = services()
    limit = svc.settings.CALLBACK_MAX_BYTES
    try:
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        signature, timestamp, nonce = _query("msg_signature"), _query("timestamp"), _query("nonce")
        envelope = parse_xml(body)
        encrypt = envelope.get("Encrypt")
        if not isinstance(encrypt, str) or not encrypt.strip():
            raise MalformedXml("no Encrypt element")
        plaintext = svc.callback_crypto(app_name).open(signature, timestamp, nonce, encrypt.strip())
        event = parse_event(plaintext)
    except CallbackRejected as exc:
        return _reject(app_name, exc)

    # An advisor's text to the bot: its answer may come back as the passive reply (app/bot/reply.py).
    advisor_text = app_name == "bot" and event.event_type == "msg:text"
    waiting = PassiveWait.announce(svc, event) if advisor_text else None
    try:
        return _store_and_answer(svc, app_name, event, plaintext, nonce, waiting, urgent=advisor_text)
    finally:
        if waiting is not None:
            waiting.release()  # whatever happened, this thread no longer waits


def _store_and_answer(
    svc: Services,
    app_name: str,
    event: CallbackEvent,
    plaintext: str,
    nonce: str,
    waiting: PassiveWait | None,
    *,
    urgent: bool,
) -> Response:
    try:
        stored = svc.ingester.ingest(
            urgent=bool(event.fields.get("WelcomeCode")) or urgent,
            source=app_name,
            dedup_key=event.dedup_key,
            event_type=event.event_type,
            corp_id=event.to_user_name,
            event_time=event.create_time,
            plaintext=plaintext,
            now=svc.clock.now(),
        )
    except NotStored as exc:
        # Not stored, so not acknowledged: WeCom delivers it again.
        log.error(
            "callback %s: could not store %s (%s); answering 503",
            app_name,
            event.event_type,
            type(exc.__cause__ or exc).__name__,
        )
        if waiting is not None:
            waiting.collect(None, nonce)
        return _text("storage unavailable", 503)
    if not stored.is_new:
        log.info("callback %s: duplicate delivery of inbox %s (%s)", app_name, stored.id, event.event_type)
    sealed = waiting.collect(stored, nonce) if waiting is not None else None
    if sealed is not None:
        return Response(sealed, status=200, mimetype="application/xml")
    return _text("success")


@callbacks.route("/wecom/callback", methods=["GET", "POST"])
def customer_contact() -> Response:
    """The customer-contact app (客户联系): external contact, tag and group-chat events."""
    return _verify_url("contact") if request.method == "GET" else _receive("contact")


@callbacks.route("/wecom/bot", methods=["GET", "POST"])
def bot() -> Response:
    """The self-built app (the bot): advisors' messages and app events."""
    return _verify_url("bot") if request.method == "GET" else _receive("bot")

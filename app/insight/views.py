"""``GET /r/<token>``: a customer opens a tracked link. The open is recorded (``link_opened``,
which moves the intent score) and the browser is sent on with a 302. No WeCom call, a few short
statements; if recording fails the customer still gets where the link points."""

from __future__ import annotations

import logging
import secrets

from flask import Blueprint, Response, redirect, request
from sqlalchemy.exc import SQLAlchemyError

from app.insight import intent, links
from app.services import services
from app.store.models import Advisor

log = logging.getLogger(__name__)

insight = Blueprint("insight", __name__)


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, mimetype="text/plain", headers={"Cache-Control": "no-store"})


@insight.get("/r/")
@insight.get("/r/<path:_rest>")
def no_link(_rest: str = "") -> Response:
    return _text("This link does not exist.", 404)


@insight.get("/r/<token>")
def open_link(token: str) -> Response:
    svc = services()
    now = svc.clock.now()
    try:
        with svc.sessions() as session:
            link = links.find(session, token)
    except SQLAlchemyError:
        log.exception("link %s: lookup failed", token)
        return _text("This link cannot be opened right now. Please try again later.", 503)
    if link is None:
        return _text("This link does not exist.", 404)
    if link.expires_at is not None and link.expires_at <= now:
        return _text("This link has expired.", 410)
    target = link.url  # only the stored URL: nothing from the request reaches the redirect
    if request.method == "GET":  # a HEAD (link preview, checker) is not an open
        try:
            with svc.sessions.begin() as session:
                advisor = session.get(Advisor, link.advisor_userid) if link.advisor_userid else None
                intent.record_action(
                    session,
                    external_userid=link.external_userid,
                    kind="link_opened",
                    advisor=link.advisor_userid,
                    dealer=advisor.dealer_code if advisor else None,
                    payload={"token": token, "url": target, "card": link.card_id, "step": link.step_index},
                    dedup_key=links.open_key(token, secrets.token_hex(8)),
                    now=now,
                    settings=svc.settings,
                )
        except SQLAlchemyError:
            log.exception("link %s: the open could not be recorded", token)
        log.info("link %s opened by %s → %s", token, link.external_userid, links.safe_target(target))
    response = redirect(target, 302)
    response.headers["Cache-Control"] = "no-store"  # every open must reach us
    response.headers["Referrer-Policy"] = "no-referrer"
    return response

"""The sidebar's routes: the page, sign-in, and the JSON API. An advisor sees and acts on only
the customers they follow now (an active follow relation); everything else is 403."""

from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Any

from flask import Response, abort, g, jsonify, redirect, request, session
from sqlalchemy.orm import Session

from app.bot import answers
from app.insight import intent, links
from app.services import Services, services
from app.sidebar import auth, jssdk, pending, sidebar
from app.sop.card import ImageReply, LinkReply, MiniProgramReply, QuickReply, TextReply, render
from app.store.models import Customer

REPLY_SENT = "reply_sent"
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


# -- the page and sign-in ---------------------------------------------------------------------


@sidebar.get("")
def page() -> Any:
    """The toolbar page. Without a session: off to WeCom's OAuth (it comes back to /auth)."""
    svc = services()
    userid = session.get(auth.SESSION_ADVISOR)
    if not userid or auth.roster_advisor(svc, userid) is None:
        return redirect(auth.start_oauth(svc.settings, request.full_path.rstrip("?")))
    return Response(PAGE, mimetype="text/html")


@sidebar.get("/auth")
def sign_in() -> Any:
    """WeCom's OAuth redirect: ``?code=&state=``. The code becomes a userid through a worker job
    (202 while it has not answered); an active advisor of the roster gets the session cookie and
    is sent back to the page they opened (or, called without that, gets JSON)."""
    svc = services()
    code = (request.args.get("code") or "").strip()
    if not code or len(code) > 512:
        abort(400, description="code is required (the one WeCom's OAuth redirect carries)")
    expected = session.get(auth.SESSION_STATE)
    if expected is not None and request.args.get("state") != expected:
        abort(400, description="state does not match the sign-in this browser started")
    result = auth.resolve_code(svc, code)
    if result is None:
        return pending()
    auth.forget_code(svc, code)
    if result.get("error") == "invalid_code":
        abort(401, description="the sign-in code is invalid or expired: open the sidebar again")
    userid = result.get("userid")
    if not userid:
        abort(403, description="only members of the corp may use the sidebar")
    advisor = auth.roster_advisor(svc, userid)
    if advisor is None:
        abort(403, description=f"{userid} is not an active advisor of the roster")
    auth.sign_in(userid)
    target = session.pop(auth.SESSION_NEXT, None)
    if expected is not None and target and target.startswith("/sidebar"):
        return redirect(target)
    return jsonify(advisor={"userid": advisor.userid, "name": advisor.name, "dealer": advisor.dealer_code})


# -- the API ---------------------------------------------------------------------------------


@sidebar.get("/api/me")
@auth.require_advisor
def me() -> Response:
    advisor = g.advisor
    return jsonify(advisor={"userid": advisor.userid, "name": advisor.name, "dealer": advisor.dealer_code})


@sidebar.get("/api/jssdk")
@auth.require_advisor
def js_sdk() -> Response:
    """``?url=<the page's URL>`` → ``{config: {...}, agentConfig: {...}}`` for wx.config and
    wx.agentConfig; 202 while the tickets are being fetched."""
    svc = services()
    url = (request.args.get("url") or "").strip()
    if not url or len(url) > 2048:
        abort(400, description="url (the page's address, without #fragment) is required")
    if not jssdk.same_site(svc.settings, url):
        abort(400, description="only pages of this server can be signed")
    found = jssdk.tickets(svc)
    if found is None:
        return pending()
    return jsonify(jssdk.sign(svc.settings, found, url, timestamp=int(svc.clock.time())))


def _followed(db: Session, external_userid: str) -> Customer:
    """The customer, if the signed-in advisor follows them now; else 403 (also for unknown ids:
    the answer must not tell whether a customer exists)."""
    if not external_userid or len(external_userid) > 64:
        abort(400, description="external_userid is required")
    if answers.active_relation(db, g.advisor.userid, external_userid) is None:
        abort(403, description="you do not follow this customer")
    customer = db.get(Customer, external_userid)
    if customer is None:
        abort(404, description="the customer is not in the store yet")
    return customer


@sidebar.get("/api/customer")
@auth.require_advisor
def customer() -> Response:
    """``?external_userid=`` (from JS-SDK getCurExternalContact) → the customer's profile,
    stage, intent and cards, each at its current step with quick replies and Q&A, texts filled
    for this customer and links made trackable."""
    svc = services()
    with svc.sessions.begin() as db:
        found = _followed(db, (request.args.get("external_userid") or "").strip())
        views = answers.customer_cards(db, svc.settings, found.external_userid, g.advisor.userid)
        values = answers.placeholder_values(db, svc.settings, found, g.advisor.userid)
        profile = found.profile or {}
        body = {
            "customer": {
                "external_userid": found.external_userid,
                "name": found.name,
                "profile": profile,
                "stage": profile.get("segment"),
                "intent": answers.intent_of(db, svc.settings, found),
            },
            "cards": [_card(svc, db, view, found.external_userid, values) for view in views],
        }
    return jsonify(body)


def _card(
    svc: Services, db: Session, view: answers.CardView, ext: str, values: dict[str, str]
) -> dict[str, Any]:
    step = view.card.steps[view.step]
    return {
        "card_id": view.card.id,
        "title": view.card.title,
        "version": view.version,
        "enrolled": view.enrolled,
        "next_due_at": view.next_due_at.isoformat() if view.next_due_at else None,
        "steps": len(view.card.steps),
        "step": {
            "index": view.step,
            "at": step.at,
            "reminder": render(step.reminder, values),
            "quick_replies": [
                {"index": i, **_reply(svc, db, reply, ext, view.card.id, view.step, values)}
                for i, reply in enumerate(step.quick_replies)
            ],
            "qa": [{"keywords": qa.keywords, "answer": render(qa.answer, values)} for qa in step.qa],
        },
    }


def _reply(
    svc: Services, db: Session, reply: QuickReply, ext: str, card_id: str, step: int, values: dict[str, str]
) -> dict[str, Any]:
    """A quick reply as sendChatMessage wants its parts; a link's URL goes through a tracked link."""
    if isinstance(reply, TextReply):
        return {"type": "text", "text": render(reply.text, values)}
    if isinstance(reply, ImageReply):
        return {"type": "image", "url": reply.url, "media_id": reply.media_id, "title": reply.title}
    if isinstance(reply, LinkReply):
        target = render(reply.url, values)
        with contextlib.suppress(links.InvalidLink):  # else sent as written
            target = links.make_link(
                db,
                svc.settings,
                url=target,
                external_userid=ext,
                advisor_userid=g.advisor.userid,
                card_id=card_id,
                step_index=step,
                now=svc.clock.now(),
            )
        return {
            "type": "link",
            "title": render(reply.title, values),
            "url": target,
            "desc": render(reply.desc, values) if reply.desc else None,
            "picurl": reply.picurl,
        }
    if isinstance(reply, MiniProgramReply):
        return {
            "type": "miniprogram",
            "title": render(reply.title, values),
            "appid": reply.appid,
            "page": render(reply.page, values),
            "picurl": reply.picurl,
        }
    raise TypeError(f"unknown quick reply {reply!r}")  # pragma: no cover


def _int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        abort(400, description=f"{name} must be a whole number ≥ 0")
    return value


@sidebar.post("/api/replies")
@auth.require_advisor
def reply_sent() -> Response:
    """``{external_userid, card_id, step, reply_index, request_id}``: the advisor sent that quick
    reply (sendChatMessage succeeded). Recorded once per advisor, customer, card, step, reply and
    request id (a client retrying the same request id records nothing more); 204."""
    svc = services()
    if not request.is_json:
        abort(415, description="send JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="the body must be a JSON object")
    card_id, step, index = body.get("card_id"), _int(body, "step"), _int(body, "reply_index")
    request_id = body.get("request_id") or request.headers.get("X-Request-Id")
    if not isinstance(card_id, str) or not card_id:
        abort(400, description="card_id is required")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        abort(400, description="request_id (1-64 of A-Z a-z 0-9 _ . : -) is required, new per send")
    ext = body.get("external_userid")
    advisor = g.advisor
    with svc.sessions.begin() as db:
        found = _followed(db, ext if isinstance(ext, str) else "")
        views = answers.customer_cards(db, svc.settings, found.external_userid, advisor.userid)
        view = next((v for v in views if v.card.id == card_id), None)
        if view is None or step >= len(view.card.steps) or index >= len(view.card.steps[step].quick_replies):
            abort(404, description="no such quick reply among this customer's cards")
        kind = view.card.steps[step].quick_replies[index].type
        parts = "\0".join((advisor.userid, found.external_userid, card_id, str(step), str(index), request_id))
        intent.record_action(
            db,
            external_userid=found.external_userid,
            kind=REPLY_SENT,
            advisor=advisor.userid,
            dealer=advisor.dealer_code,
            payload={
                "card": card_id,
                "version": view.version,
                "step": step,
                "reply_index": index,
                "type": kind,
            },
            dedup_key=f"{REPLY_SENT}:{hashlib.sha256(parts.encode()).hexdigest()[:40]}",
            now=svc.clock.now(),
            settings=svc.settings,
        )
    return Response(status=204)


PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>客户话术</title>
<style>
body{font:14px/1.5 -apple-system,"PingFang SC",sans-serif;margin:0;padding:12px;color:#222}
h1{font-size:16px;margin:0 0 4px}.muted{color:#888;font-size:12px}
.card{border:1px solid #e5e5e5;border-radius:6px;padding:8px;margin:10px 0}
.reply{display:flex;gap:8px;align-items:flex-start;margin:6px 0}.reply div{flex:1}
button{border:0;border-radius:4px;background:#1aad19;color:#fff;padding:4px 10px}
</style></head><body>
<div id="who" class="muted">加载中…</div><div id="cards"></div>
<script src="https://res.wx.qq.com/open/js/jweixin-1.2.0.js"></script>
<script src="https://open.work.weixin.qq.com/wwopen/js/jwxwork-1.0.0.js"></script>
<script>
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var api = function (path, options) {
    return fetch("/sidebar/api/" + path, Object.assign({credentials: "same-origin"}, options || {}))
      .then(function (r) {
        if (r.status === 202) return new Promise(function (ok) { setTimeout(ok, 1000); })
          .then(function () { return api(path, options); });
        if (r.status === 204) return null;
        return r.json().then(function (b) { if (!r.ok) throw new Error(b.message || r.status); return b; });
      });
  };
  var esc = function (s) {
    var d = document.createElement("div"); d.textContent = s || ""; return d.innerHTML;
  };
  var message = function (r) {
    if (r.type === "text") return {msgtype: "text", text: {content: r.text}};
    if (r.type === "link") return {msgtype: "news",
      news: {link: r.url, title: r.title, desc: r.desc || "", imgUrl: r.picurl || ""}};
    if (r.type === "miniprogram") return {msgtype: "miniprogram",
      miniprogram: {appid: r.appid, title: r.title, imgUrl: r.picurl, page: r.page}};
    return {msgtype: "image", image: {mediaid: r.media_id}};
  };
  var show = function (ext, data) {
    $("who").textContent = data.customer.name + " · " + (data.customer.stage || "") +
      (data.customer.intent.band ? " · 意向 " + data.customer.intent.band : "");
    $("cards").innerHTML = data.cards.map(function (c) {
      return '<div class="card"><h1>' + esc(c.title) + '</h1><div class="muted">第 ' + (c.step.index + 1) +
        " 步 · " + esc(c.step.reminder) + "</div>" + c.step.quick_replies.map(function (r) {
          return '<div class="reply"><div>' + esc(r.text || r.title) + '</div><button data-card="' +
            esc(c.card_id) + '" data-step="' + c.step.index + '" data-index="' + r.index +
            '">发送</button></div>';
        }).join("") + c.step.qa.map(function (q) {
          return '<div class="muted">问：' + esc(q.keywords.join(" / ")) + "<br>答：" + esc(q.answer) +
            "</div>";
        }).join("") + "</div>";
    }).join("") || '<div class="muted">暂无话术</div>';
    $("cards").onclick = function (e) {
      var b = e.target.closest("button"); if (!b) return;
      var card = data.cards.filter(function (c) { return c.card_id === b.dataset.card; })[0];
      var reply = card.step.quick_replies[+b.dataset.index];
      var requestId = Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
      wx.invoke("sendChatMessage", message(reply), function (res) {
        if (res.err_msg !== "sendChatMessage:ok") return;
        api("replies", {method: "POST", headers: {"Content-Type": "application/json"},
          body: JSON.stringify({external_userid: ext, card_id: card.card_id, step: +b.dataset.step,
                                reply_index: +b.dataset.index, request_id: requestId})});
      });
    };
  };
  var load = function (ext) {
    return api("customer?external_userid=" + encodeURIComponent(ext)).then(function (d) { show(ext, d); });
  };
  var fail = function (e) { $("who").textContent = "出错了：" + e.message; };
  var given = new URLSearchParams(location.search).get("external_userid");
  api("jssdk?url=" + encodeURIComponent(location.href.split("#")[0])).then(function (s) {
    wx.agentConfig(Object.assign({}, s.agentConfig, {
      success: function () {
        wx.invoke("getCurExternalContact", {}, function (res) {
          var ext = res.err_msg === "getCurExternalContact:ok" ? res.userId : given;
          if (ext) load(ext).catch(fail); else $("who").textContent = "请在与客户的聊天中打开";
        });
      },
      fail: function () { if (given) load(given).catch(fail); else fail(new Error("agentConfig")); }
    }));
  }).catch(function (e) { if (given) load(given).catch(fail); else fail(e); });
})();
</script></body></html>
"""

"""Event=change_external_contact: a customer adds, is edited, deleted, leaves, or refuses a transfer.

Every WeCom call comes first and is made once per event (app/store/effects.py); the rows and
interactions are written last, through ctx.session, and commit with the inbox row. A job that
runs again re-reads its recorded effects and writes the same rows (same dedup keys).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from app.intake import assign, notify, profile, tagging, welcome
from app.intake import leads as lead_service
from app.intake import state as states
from app.store import customers, effects
from app.store.models import (
    Advisor,
    Assignment,
    Customer,
    Dealer,
    FollowRelation,
    Lead,
    RelationStatus,
)
from app.wecom.client import contact_client
from app.wecom.errors import WeComError
from app.wecom.events import ExternalContactChange
from workers.handlers.context import HandlerContext

log = logging.getLogger(__name__)

# WeCom answers for a customer or relation that is gone by the time we ask.
GONE = {40096, 84061}
WELCOME_USED, WELCOME_EXPIRED = 41051, 41050
TRANSFER_PENDING = 40100
# What WeCom answers per customer for a customer already being transferred (当前客户正在转接中):
# our own earlier call, made by a run that died before the ledger write, as 40100 is.
TRANSFER_UNDER_WAY = 40129
MAX_TRANSFER_OFFERS = 3  # a customer refused this many hand-overs stays with who has them


@dataclass(frozen=True)
class _People:
    receiver: Advisor | None
    dealer: Dealer | None
    lead: Lead | None


def _lookup(ctx: HandlerContext, userid: str, lead_token: str | None) -> _People:
    with ctx.services.sessions() as session:
        advisor = session.get(Advisor, userid)
        dealer = session.get(Dealer, advisor.dealer_code) if advisor else None
        lead = None
        if lead_token:
            lead = session.scalars(select(Lead).where(Lead.link_token == lead_token)).first()
        if advisor is not None:
            session.expunge(advisor)
        if dealer is not None:
            session.expunge(dealer)
        if lead is not None:
            session.expunge(lead)
    return _People(advisor, dealer, lead)


def _advisor_name(ctx: HandlerContext, userid: str | None) -> str | None:
    if not userid:
        return None
    with ctx.services.sessions() as session:
        return session.scalar(select(Advisor.name).where(Advisor.userid == userid))


# -- add -------------------------------------------------------------------------------------------


def customer_added(ctx: HandlerContext) -> None:
    _customer_added(ctx, confirmed=True)


def customer_added_unconfirmed(ctx: HandlerContext) -> None:
    """add_half_external_contact: the customer added the advisor, who has not accepted yet. The
    welcome code is live, so the welcome goes out; nobody is handed over before the advisor accepts."""
    _customer_added(ctx, confirmed=False)


def _customer_added(ctx: HandlerContext, confirmed: bool) -> None:
    svc = ctx.services
    change = ExternalContactChange.of(ctx.event)
    receiver, ext = change.user_id, change.external_user_id
    state = states.parse(change.state)
    people = _lookup(ctx, receiver, state.lead_token)
    base_profile = profile.build(state, people.lead, people.receiver.dealer_code if people.receiver else None)

    # 1. Who keeps the customer: a shared code asks the engine; any other code keeps the receiver.
    key = f"event:{ctx.inbox_id}"
    if state.is_shared and confirmed:
        # Before any WeCom call: decide() holds the decision lock only for its own queries, and
        # its AssignmentBusy (lock not free in time) fails the job before anything was sent, so
        # RQ's retry starts clean. The decision counts as load from the ledger until the row is
        # written in step 6 (same key: ledger "assign:event:<id>", row "event:<id>").
        decision = assign.decide(svc, key, profile.to_customer(base_profile))
        reason = "shared_code"
    else:
        decision = assign.Decision(
            receiver,
            people.receiver.dealer_code if people.receiver else None,
            None,
            {"reason": _kept_because(state)},
        )
        reason = "lead" if state.channel == states.LEAD_CHANNEL else "own_code"
    keeper = decision.advisor or receiver
    handed_over = keeper != receiver

    # 2. The welcome first: its code lives about 20 s and works once.
    welcomed = None
    if change.welcome_code:
        text = welcome.text(
            welcome.WelcomeContext(
                receiver_name=people.receiver.name if people.receiver else None,
                keeper_name=_advisor_name(ctx, keeper),
                dealer_name=people.dealer.name if people.dealer else None,
                model=base_profile.get("model"),
                handed_over=handed_over,
            )
        )
        welcomed = _send_welcome(ctx, change.welcome_code, text)

    # 3. Who the customer is, and the tags on the relation.
    contact = _fetch_contact(ctx, ext)
    follow = _follow_entry(contact, receiver) if contact else None
    tag_pairs = [(t.get("group_name", ""), t.get("tag_name", "")) for t in (follow or {}).get("tags", [])]
    tag_ids = [t["tag_id"] for t in (follow or {}).get("tags", []) if t.get("tag_id")]
    full_profile = profile.build(state, people.lead, base_profile.get("dealer"), tag_pairs)

    tagged: list[str] = []
    transfer: dict[str, Any] | None = None
    if contact is not None:
        # 4. Tags from the state (channel, model, campaign), once per event.
        # Not "minus what is already there": a retried job sees its own tags and must still
        # record the same interaction (mark_tag is idempotent, and ledgered).
        wanted = list(state.tags.items())
        if wanted:
            tagged = _mark_tags(ctx, receiver, ext, wanted)
            tag_ids += [t for t in tagged if t not in tag_ids]
        # 5. The hand-over, when the engine chose someone else.
        if handed_over and confirmed:
            transfer = _transfer(ctx, f"transfer:{ctx.inbox_id}", receiver, keeper, ext, people, base_profile)

    # 6. The store: customer, relation, assignment, lead link; then the interactions.
    now = svc.clock.now()
    session = ctx.session
    unionid = (contact or {}).get("external_contact", {}).get("unionid")
    customers.upsert_customer(
        session,
        ext,
        now,
        name=(contact or {}).get("external_contact", {}).get("name"),
        type=(contact or {}).get("external_contact", {}).get("type"),
        unionid=unionid,
        profile=full_profile,
    )
    dealer_code = people.receiver.dealer_code if people.receiver else decision.dealer
    customers.upsert_relation(
        session, receiver, ext, now, dealer_code=dealer_code, state=change.state, tag_ids=tag_ids
    )
    if transfer is None or transfer.get("status") != "started":
        status = "kept" if not handed_over else "failed"
    else:
        status = "transferring"
    linked = lead_service.link_on_add(
        session, external_userid=ext, unionid=unionid, state=state, advisor_userid=keeper, now=now
    )
    if linked is not None and status == "kept" and linked.advisor_userid == keeper:
        status = "linked"  # the lead's assignment already counts towards the advisor's load
    if not confirmed and status == "kept":
        # Not load yet: WeCom sends add_external_contact when the advisor confirms, and that
        # add's row counts the customer (once; a shared code's engine decides only then).
        status = "unconfirmed"
    assign.record(session, key, decision, reason=reason, status=status, now=now, external_userid=ext)

    dealer = decision.dealer or dealer_code
    ctx.record(
        "added_unconfirmed" if not confirmed else "added",
        advisor=receiver,
        customer=ext,
        dealer=dealer_code,
        payload={
            "state": change.state,
            "channel": state.channel,
            "has_welcome_code": bool(change.welcome_code),
        },
    )
    ctx.record(
        "assigned",
        advisor=keeper,
        customer=ext,
        dealer=dealer,
        payload={"reason": reason, "score": decision.score, "explanation": decision.explanation},
    )
    if welcomed is not None:
        kind = "welcomed" if welcomed["status"] in ("sent", "already_used") else "welcome_missed"
        ctx.record(kind, advisor=receiver, customer=ext, dealer=dealer_code, payload=welcomed)
    if tagged:
        ctx.record(
            "tagged",
            advisor=receiver,
            customer=ext,
            dealer=dealer_code,
            payload={"tag_ids": tagged, "tags": [f"{g}:{n}" for g, n in wanted]},
        )
    if transfer is not None:
        _record_transfer(ctx, transfer, receiver, keeper, ext, dealer)
    if linked is not None:
        ctx.record(
            "lead_linked",
            advisor=keeper,
            customer=ext,
            dealer=dealer,
            payload={"lead_id": linked.id, "by": "state" if state.lead_token else "unionid"},
        )
    if contact is None:
        ctx.record("contact_gone", advisor=receiver, customer=ext, payload={"step": "externalcontact/get"})


def _kept_because(state: states.State) -> str:
    return {
        "ad": "the advisor's own code: the customer chose this advisor",
        "lp": "a landing-page code: the advisor was matched when the page was shown",
        "ld": "a lead's link: the lead's advisor keeps the customer",
        "qr": "the advisor has not accepted the customer yet",
        "rc": "the advisor has not accepted the customer yet",
    }.get(
        state.channel or "", "a code Dealer SCRM did not make: the advisor who was added keeps the customer"
    )


def _send_welcome(ctx: HandlerContext, code: str, text: str) -> dict[str, Any]:
    svc = ctx.services
    added_at = ctx.event.create_time

    def send() -> dict[str, Any]:
        age = round(svc.clock.time() - added_at, 3)
        try:
            contact_client(svc).post(
                "externalcontact/send_welcome_msg", data={"welcome_code": code, "text": {"content": text}}
            )
        except WeComError as exc:
            if exc.errcode == WELCOME_USED:
                # Used: by our own earlier attempt that died before recording it, or by an
                # admin-configured welcome. Either way the customer was welcomed once.
                return {"status": "already_used", "seconds_after_add": age}
            if exc.errcode == WELCOME_EXPIRED:
                return {"status": "expired", "seconds_after_add": age}
            raise
        return {"status": "sent", "seconds_after_add": age, "text": text}

    result, _ = effects.once(svc.sessions, f"welcome:{ctx.inbox_id}", svc.clock.now(), send)
    return result


def _fetch_contact(ctx: HandlerContext, ext: str) -> dict[str, Any] | None:
    try:
        return contact_client(ctx.services).get("externalcontact/get", params={"external_userid": ext})
    except WeComError as exc:
        if exc.errcode in GONE:
            return None
        raise


def _follow_entry(contact: dict[str, Any], userid: str) -> dict[str, Any] | None:
    return next((f for f in contact.get("follow_user", []) if f.get("userid") == userid), None)


def _mark_tags(ctx: HandlerContext, userid: str, ext: str, wanted: list[tuple[str, str]]) -> list[str]:
    svc = ctx.services
    tag_ids = tagging.tag_ids_for(svc, wanted)

    def mark() -> dict[str, Any]:
        # mark_tag is idempotent in WeCom (adding a tag the relation has is a no-op).
        contact_client(svc).post(
            "externalcontact/mark_tag", data={"userid": userid, "external_userid": ext, "add_tag": tag_ids}
        )
        return {"tag_ids": tag_ids}

    result, _ = effects.once(svc.sessions, f"mark-tag:{ctx.inbox_id}", svc.clock.now(), mark)
    return list(result["tag_ids"])


def _transfer(
    ctx: HandlerContext,
    key: str,
    handover: str,
    takeover: str,
    ext: str,
    people: _People,
    customer_profile: dict[str, Any],
) -> dict[str, Any]:
    svc = ctx.services
    name = _advisor_name(ctx, takeover) or "专属顾问"
    model = customer_profile.get("model")
    message = f"您好，{name}是{model + '的' if model else ''}专属顾问，后续由TA为您服务。"

    def start() -> dict[str, Any]:
        answer = contact_client(svc).transfer_customer(handover, takeover, [ext], message)
        errcode = next(
            (c.get("errcode", 0) for c in answer.get("customer", []) if c["external_userid"] == ext), 0
        )
        if errcode in (0, TRANSFER_PENDING, TRANSFER_UNDER_WAY):
            return {"status": "started", "from": handover, "to": takeover}
        return {"status": "failed", "from": handover, "to": takeover, "errcode": errcode}

    result, _ = effects.once(svc.sessions, key, svc.clock.now(), start)
    return result


def _record_transfer(
    ctx: HandlerContext, transfer: dict[str, Any], handover: str, takeover: str, ext: str, dealer: str | None
) -> None:
    if transfer["status"] == "started":
        ctx.record("transferred", advisor=takeover, customer=ext, dealer=dealer, payload=transfer)
    else:
        ctx.record("transfer_failed", advisor=takeover, customer=ext, dealer=dealer, payload=transfer)


# -- edit ------------------------------------------------------------------------------------------


def customer_edited(ctx: HandlerContext) -> None:
    """The advisor edited remark, description or tags: refresh the customer and the relation."""
    change = ExternalContactChange.of(ctx.event)
    contact = _fetch_contact(ctx, change.external_user_id)
    now = ctx.services.clock.now()
    payload: dict[str, Any] = {}
    if contact is not None:
        follow = _follow_entry(contact, change.user_id) or {}
        pairs = [(t.get("group_name", ""), t.get("tag_name", "")) for t in follow.get("tags", [])]
        external = contact.get("external_contact", {})
        tag_profile = profile.from_tags(pairs)
        customers.upsert_customer(
            ctx.session,
            change.external_user_id,
            now,
            name=external.get("name"),
            type=external.get("type"),
            unionid=external.get("unionid"),
            profile=tag_profile,
        )
        customers.upsert_relation(
            ctx.session,
            change.user_id,
            change.external_user_id,
            now,
            tag_ids=[t["tag_id"] for t in follow.get("tags", []) if t.get("tag_id")],
        )
        payload = {"tags": [f"{g}:{n}" for g, n in pairs]}
    ctx.record("edited", advisor=change.user_id, customer=change.external_user_id, payload=payload)


# -- deletions -------------------------------------------------------------------------------------


def advisor_deleted_customer(ctx: HandlerContext) -> None:
    """del_external_contact: the advisor removed the customer, or a transfer completed
    (Source=DELETE_BY_TRANSFER: the customer now belongs to the takeover advisor)."""
    change = ExternalContactChange.of(ctx.event)
    session, now = ctx.session, ctx.services.clock.now()
    ext, handover = change.external_user_id, change.user_id
    if change.source == "DELETE_BY_TRANSFER":
        customers.end_relation(session, handover, ext, RelationStatus.TRANSFERRED, "transfer", now)
        assignment = _pending_transfer(session, ext)
        takeover = assignment.advisor_userid if assignment else None
        if assignment is not None and takeover:
            assign.set_status(session, assignment.dedup_key, "transferred", now)
            relation = session.scalars(
                select(FollowRelation).where(
                    FollowRelation.advisor_userid == handover, FollowRelation.external_userid == ext
                )
            ).first()
            customers.upsert_relation(
                session,
                takeover,
                ext,
                now,
                dealer_code=assignment.dealer_code,
                state=relation.state if relation else None,
                tag_ids=list(relation.tag_ids) if relation else None,
            )
        ctx.record(
            "transfer_completed",
            advisor=takeover or handover,  # a transfer made outside Dealer SCRM: we only know who left
            customer=ext,
            dealer=assignment.dealer_code if assignment else None,
            payload={"from": handover, "to": takeover},
        )
        return
    customers.end_relation(session, handover, ext, RelationStatus.REMOVED, change.source or "advisor", now)
    ctx.record("deleted", advisor=handover, customer=ext, payload={"by": "advisor", "source": change.source})


def customer_deleted_advisor(ctx: HandlerContext) -> None:
    """del_follow_user: the customer deleted the advisor. Mark the relation lost and alert the
    dealer's manager through the bot, so someone can win the customer back."""
    svc = ctx.services
    change = ExternalContactChange.of(ctx.event)
    advisor_id, ext = change.user_id, change.external_user_id
    with svc.sessions() as session:
        advisor = session.get(Advisor, advisor_id)
        dealer = session.get(Dealer, advisor.dealer_code) if advisor else None
        customer = session.get(Customer, ext)
        relation = session.scalars(
            select(FollowRelation).where(
                FollowRelation.advisor_userid == advisor_id, FollowRelation.external_userid == ext
            )
        ).first()
        days = None
        if relation is not None:
            days = max(0, (svc.clock.now() - relation.added_at).days)
        manager = dealer.manager_userid if dealer else None
        details = {
            "advisor_name": advisor.name if advisor else advisor_id,
            "dealer_name": dealer.name if dealer else "",
            "customer_name": (customer.name if customer else "") or "客户",
            "model": (customer.profile or {}).get("model") if customer else None,
        }

    alert = None
    if manager:

        def send() -> dict[str, Any]:
            model = f"（意向{details['model']}）" if details["model"] else ""
            followed = f"，跟进{days}天" if days is not None else ""
            answer = notify.send_card(
                svc,
                [manager],
                title=f"客户流失提醒：{details['customer_name']}删除了{details['advisor_name']}",
                description=(
                    f'<div class="gray">{details["dealer_name"]}</div>'
                    f"<div>{details['customer_name']}{model}删除了顾问{details['advisor_name']}{followed}。</div>"
                    '<div class="highlight">建议：安排其他顾问通过电话或门店活动重新联系。</div>'
                ),
                url=svc.settings.public_url(f"/customers/{ext}"),
            )
            return {"manager": manager, "msgid": answer.get("msgid")}

        alert, _ = effects.once(svc.sessions, f"churn-alert:{ctx.inbox_id}", svc.clock.now(), send)

    now = svc.clock.now()
    customers.end_relation(ctx.session, advisor_id, ext, RelationStatus.LOST, "customer_deleted_advisor", now)
    dealer_code = advisor.dealer_code if advisor else None
    ctx.record(
        "churned",
        advisor=advisor_id,
        customer=ext,
        dealer=dealer_code,
        payload={"by": "customer", "days_followed": days},
    )
    if alert is not None:
        ctx.record("churn_alerted", advisor=manager, customer=ext, dealer=dealer_code, payload=alert)


# -- transfer refused ------------------------------------------------------------------------------


def transfer_failed(ctx: HandlerContext) -> None:
    """transfer_fail: the takeover advisor did not get the customer (refused, or at their limit).
    The customer stays with who has them; offer them to the next-best advisor, unless they have
    refused MAX_TRANSFER_OFFERS hand-overs already."""
    svc = ctx.services
    change = ExternalContactChange.of(ctx.event)
    failed, ext, why = change.user_id, change.external_user_id, change.fail_reason or "unknown"
    with svc.sessions() as session:
        holder_relation = next(
            (r for r in customers.active_relations(session, ext) if r.advisor_userid != failed), None
        )
        holder = holder_relation.advisor_userid if holder_relation else None
        customer = session.get(Customer, ext)
        customer_profile = dict(customer.profile or {}) if customer else {}
        refused = list(
            session.scalars(
                select(Assignment.advisor_userid).where(
                    Assignment.external_userid == ext, Assignment.status == "failed"
                )
            )
        )
        failed_dealer = session.scalar(select(Advisor.dealer_code).where(Advisor.userid == failed))
        pending = _pending_transfer(session, ext, failed)
        pending_key = pending.dedup_key if pending else None
    exclude = {userid: "a transfer to this advisor failed" for userid in {*refused, failed} if userid}
    if holder:
        exclude[holder] = "already has the customer"

    decision = None
    transfer = None
    if holder and len(exclude) - 1 < MAX_TRANSFER_OFFERS and customer_profile:
        decision = assign.decide(svc, f"event:{ctx.inbox_id}", profile.to_customer(customer_profile), exclude)
        if decision.advisor:
            people = _People(None, None, None)
            transfer = _transfer(
                ctx, f"transfer:{ctx.inbox_id}", holder, decision.advisor, ext, people, customer_profile
            )

    now = svc.clock.now()
    if pending_key:
        assign.set_status(ctx.session, pending_key, "failed", now)
    ctx.record(
        "transfer_failed",
        advisor=failed,
        customer=ext,
        dealer=failed_dealer,
        payload={"reason": why, "kept_by": holder},
    )
    if decision is not None:
        started = transfer is not None and transfer["status"] == "started"
        assign.record(
            ctx.session,
            f"event:{ctx.inbox_id}",
            decision,
            reason="transfer_retry",
            status="transferring" if started else ("failed" if decision.advisor else "unassigned"),
            now=now,
            external_userid=ext,
        )
        ctx.record(
            "assigned",
            advisor=decision.advisor,
            customer=ext,
            dealer=decision.dealer,
            payload={
                "reason": "transfer_retry",
                "score": decision.score,
                "explanation": decision.explanation,
            },
        )
        if transfer is not None and holder and decision.advisor:
            _record_transfer(ctx, transfer, holder, decision.advisor, ext, decision.dealer)


def _pending_transfer(session, ext: str, takeover: str | None = None) -> Assignment | None:
    stmt = select(Assignment).where(Assignment.external_userid == ext, Assignment.status == "transferring")
    if takeover:
        stmt = stmt.where(Assignment.advisor_userid == takeover)
    return session.scalars(stmt.order_by(Assignment.id.desc())).first()

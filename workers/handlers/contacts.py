"""Event=change_external_contact. For now each writes its interaction; intake (matching,
welcome, tags) builds on these in app/intake."""

from __future__ import annotations

from app.wecom.events import ExternalContactChange
from workers.handlers.context import HandlerContext


def customer_added(ctx: HandlerContext) -> None:
    change = ExternalContactChange.of(ctx.event)
    ctx.record(
        "added",
        advisor=change.user_id,
        customer=change.external_user_id,
        payload={"state": change.state, "has_welcome_code": bool(change.welcome_code)},
    )


def customer_added_unconfirmed(ctx: HandlerContext) -> None:
    change = ExternalContactChange.of(ctx.event)
    ctx.record(
        "added_unconfirmed",
        advisor=change.user_id,
        customer=change.external_user_id,
        payload={"state": change.state, "has_welcome_code": bool(change.welcome_code)},
    )


def customer_edited(ctx: HandlerContext) -> None:
    change = ExternalContactChange.of(ctx.event)
    ctx.record("edited", advisor=change.user_id, customer=change.external_user_id)


def advisor_deleted_customer(ctx: HandlerContext) -> None:
    change = ExternalContactChange.of(ctx.event)
    ctx.record(
        "deleted",
        advisor=change.user_id,
        customer=change.external_user_id,
        payload={"by": "advisor", "source": change.source},
    )


def customer_deleted_advisor(ctx: HandlerContext) -> None:
    change = ExternalContactChange.of(ctx.event)
    ctx.record(
        "churned", advisor=change.user_id, customer=change.external_user_id, payload={"by": "customer"}
    )


def transfer_failed(ctx: HandlerContext) -> None:
    change = ExternalContactChange.of(ctx.event)
    ctx.record(
        "transfer_failed",
        advisor=change.user_id,
        customer=change.external_user_id,
        payload={"reason": change.fail_reason},
    )

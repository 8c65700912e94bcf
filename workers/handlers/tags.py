"""Event=change_external_tag: keep the stored corp tag library (corp_tags) in step with WeCom.

WeCom is asked first and the answer written afterwards through ``ctx.session`` (see
workers/handlers/context.py). Deletions need no call: the event says what is gone.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.intake import tagging
from app.wecom.events import CallbackEvent
from workers.handlers.context import HandlerContext

TAG = "tag"
TAG_GROUP = "tag_group"


class TagChange(BaseModel):
    """Id (a tag or group id), TagType (tag | tag_group; absent on shuffle), ChangeType
    (create | update | delete | shuffle), StrategyId (rule-group tags only). Field order varies."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    change_type: str = Field(alias="ChangeType")
    id: str = Field(default="", alias="Id")
    tag_type: str = Field(default="", alias="TagType")
    strategy_id: str | None = Field(default=None, alias="StrategyId")

    @classmethod
    def of(cls, event: CallbackEvent) -> TagChange:
        fields = {k: v.strip() if isinstance(v, str) else v for k, v in event.fields.items()}
        return cls.model_validate(fields)


def _record(ctx: HandlerContext, change: TagChange) -> None:
    ctx.record(
        "tag_library_changed",
        payload={"change": change.change_type, "tag_type": change.tag_type or None, "id": change.id or None},
    )


def _full_sync(ctx: HandlerContext) -> None:
    tags = tagging.fetch_tags(ctx.services)
    tagging.apply_sync(ctx.session, tags, ctx.services.clock.now())


def tag_created_or_updated(ctx: HandlerContext) -> None:
    """A tag: read it from WeCom and store it (gone by now → flagged deleted). A group: read the
    group and store its tags (those it no longer has → flagged deleted)."""
    change = TagChange.of(ctx.event)
    now = ctx.services.clock.now()
    if not change.id:
        _full_sync(ctx)
    elif change.tag_type == TAG_GROUP:
        tags = tagging.fetch_tags(ctx.services, group_ids=[change.id])
        tagging.apply_sync(ctx.session, tags, now, group_ids=[change.id])
    else:
        tags = [t for t in tagging.fetch_tags(ctx.services, tag_ids=[change.id]) if t.tag_id == change.id]
        if tags:
            tagging.upsert_tags(ctx.session, tags, now)
        else:
            tagging.mark_deleted(ctx.session, now, tag_ids=[change.id])
    _record(ctx, change)


def tag_deleted(ctx: HandlerContext) -> None:
    """A tag, or a whole group (WeCom sends no event per tag of a deleted group)."""
    change = TagChange.of(ctx.event)
    now = ctx.services.clock.now()
    if change.tag_type == TAG_GROUP:
        tagging.mark_deleted(ctx.session, now, group_ids=[change.id])
    else:
        tagging.mark_deleted(ctx.session, now, tag_ids=[change.id])
    _record(ctx, change)


def tags_shuffled(ctx: HandlerContext) -> None:
    """Tags were reordered (in one group, or all groups when Id is empty): read everything."""
    change = TagChange.of(ctx.event)
    _full_sync(ctx)
    _record(ctx, change)

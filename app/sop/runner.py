"""Due steps: find them (``due_steps``, the sweep's index-only query) and run each exactly once.

One step run (``run_step``):

1. **Claim** (a short transaction of its own): the enrollment's ``lease_until`` is set if the
   step is still its next step, is due, and no other run holds it. A second job for the same step
   finds the lease and leaves (``busy``), so the step's WeCom calls are never made by two runs at
   once. ``attempts`` counts claims: a step that keeps failing ends the enrollment
   (``step_failed``) instead of failing for ever.
2. **WeCom, through the effects ledger** (each call once, its result kept under
   ``sop-step:<enrollment>:<step>:reminder`` / ``…:action:<i>``; a run after a crash reuses it):
   the reminder card to the advisor (``notify.send_card``: textcard through the bot, with WeCom's
   duplicate check covering a crash between the call and the ledger write), then the step's
   actions — ``tag`` (mark_tag on the follow relation, missing tags created), ``send``
   (add_msg_template with the advisor as sender; the advisor confirms it in WeCom; a mini-program's
   cover goes up as WeCom media first, app/wecom/media.py, and a cover that cannot be used makes
   the send ``failed`` with the reason in ``sop_step_done`` rather than failing the step again and
   again; a cover host that is down fails the run, which is retried like a busy WeCom).
3. **The store, in one transaction**: the step run row (``UNIQUE(enrollment_id, step_index)``,
   ``INSERT … ON CONFLICT DO NOTHING``: of two runs only one inserts, the other writes nothing),
   the enrollment advanced (next step and its due time, or ``completed``), the ``stage`` action
   (``customers.profile["segment"]`` and a ``stage_changed`` interaction), the relation's tags,
   and the interactions ``sop_reminded``, ``sop_step_done``, ``tagged``, ``sop_completed``.

WeCom is called before anything is written in a long transaction (SQLite has one writer; see
workers/handlers/context.py). A step whose next step is already due (the system was down or far
behind) is ``skipped``: no reminder, no actions, so an advisor never gets a pile of stale cards at
once. A step whose advisor no longer has the customer exits the enrollment (``customer_left`` when
the card says so, ``removed``), or waits while a hand-over is being recorded.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.intake import notify, tagging
from app.services import Services
from app.sop import enrollment
from app.sop.card import (
    Card,
    ImageReply,
    LinkReply,
    MiniProgramReply,
    SendAction,
    StageAction,
    TagAction,
    TextReply,
    render,
)
from app.sop.enrollment import CustomerView
from app.store import attempts, effects, interactions
from app.store.db import insert_for
from app.store.interactions import NewInteraction
from app.store.models import CorpTag, Customer, FollowRelation, RelationStatus, SopCardVersion
from app.store.sop_models import EnrollmentStatus, SopEnrollment, SopStepRun, StepRunStatus
from app.wecom import media
from app.wecom.client import contact_client
from app.wecom.errors import WeComError
from app.wecom.msg_templates import find_task

log = logging.getLogger(__name__)

E = SopEnrollment.__table__
R = SopStepRun.__table__
GONE = {40096, 84061}  # the customer, or the relation with the advisor, is gone
# add_msg_template for one customer who cannot be sent to (not a friend any more, over their
# receiving limit): WeCom refuses the whole call with "no customers to send to". Another run
# would meet the same answer, so the send is recorded as not sendable and the step goes on.
NOBODY_TO_SEND = 41048
MAX_STEP_ATTEMPTS = 8  # claims of one step before the enrollment ends with step_failed
REMINDER_BUTTON = "查看话术"  # textcard btntxt: at most 4 characters
SUGGESTED_REPLIES = 2  # how many quick replies the reminder card quotes

Status = Literal["done", "skipped", "not_due", "busy", "waiting", "exited", "failed"]


@dataclass
class RunReport:
    selected: int = 0  # due steps found
    done: int = 0
    completed: int = 0  # enrollments whose last step ran
    skipped: int = 0
    not_due: int = 0  # ran elsewhere already, or no longer due
    busy: int = 0  # another run holds the step
    waiting: int = 0
    exited: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def count(self, status: Status) -> None:
        setattr(self, status, getattr(self, status) + 1)

    def __str__(self) -> str:
        parts = [f"{self.selected} due step(s)", f"{self.done} done ({self.completed} completed a card)"]
        for name in ("skipped", "not_due", "busy", "waiting", "exited", "failed"):
            if getattr(self, name):
                parts.append(f"{getattr(self, name)} {name.replace('_', ' ')}")
        return ", ".join(parts)


# -- finding due steps ------------------------------------------------------------------------------


def due_steps(session: Session, now: datetime, limit: int) -> list[tuple[int, int]]:
    """(enrollment id, step index) of up to ``limit`` due steps, most overdue first. Reads only
    the partial covering index ``ix_sop_enrollments_due``: its cost is the due rows, not the
    enrollments."""
    rows = session.execute(
        select(E.c.id, E.c.next_step)
        .where(E.c.next_due_at <= now)
        .order_by(E.c.next_due_at, E.c.id)
        .limit(limit)
    )
    return [(int(eid), int(step)) for eid, step in rows]


def run_due(svc: Services, limit: int = 1000) -> RunReport:
    """Run up to ``limit`` due steps now, in this process (``scrm sop run-due``). A step that
    fails is counted and logged; the others still run."""
    with svc.sessions() as session:
        due = due_steps(session, svc.clock.now(), limit)
    return run_steps(svc, due)


def run_steps(svc: Services, items: Iterable[tuple[int, int]], *, raise_errors: bool = False) -> RunReport:
    """Run the given steps; with ``raise_errors`` the first error is raised after the others ran
    (a job then fails and RQ retries it; steps that ran are not run again)."""
    report = RunReport()
    first_error: Exception | None = None
    for enrollment_id, step_index in items:
        report.selected += 1
        try:
            status = run_step(svc, enrollment_id, step_index)
        except Exception as exc:
            log.exception("SOP enrollment %s step %s failed", enrollment_id, step_index)
            report.failed += 1
            report.errors.append(f"{enrollment_id}:{step_index}: {type(exc).__name__}: {exc}")
            first_error = first_error or exc
            continue
        if status == "completed":
            report.done += 1
            report.completed += 1
        else:
            report.count(status)
    if raise_errors and first_error is not None:
        raise first_error
    return report


# -- one step -------------------------------------------------------------------------------------


def _lease(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.JOB_TIMEOUT + 30)


def claim(svc: Services, enrollment_id: int, step_index: int, now: datetime) -> int | None:
    """Hold the step for this run; the claim's attempt number, or None if it is not ours to run."""
    with svc.sessions.begin() as session:
        row = session.execute(
            update(E)
            .where(
                E.c.id == enrollment_id,
                E.c.status == EnrollmentStatus.ACTIVE,
                E.c.next_step == step_index,
                E.c.next_due_at <= now,
                (E.c.lease_until.is_(None)) | (E.c.lease_until <= now),
            )
            .values(lease_until=now + _lease(svc.settings), attempts=E.c.attempts + 1)
            .returning(E.c.attempts)
        ).first()
    return int(row[0]) if row is not None else None


def release(svc: Services, enrollment_id: int, step_index: int) -> None:
    """Give the step back (the run failed or must wait): the next sweep may take it at once."""
    with svc.sessions.begin() as session:
        session.execute(
            update(E).where(E.c.id == enrollment_id, E.c.next_step == step_index).values(lease_until=None)
        )


def run_step(svc: Services, enrollment_id: int, step_index: int) -> Status | Literal["completed"]:
    """Run one step of one enrollment, at most once whatever runs it concurrently or again."""
    now = svc.clock.now()
    attempt = claim(svc, enrollment_id, step_index, now)
    if attempt is None:
        return _why_not(svc, enrollment_id, step_index, now)
    try:
        return _run_claimed(svc, enrollment_id, step_index, attempt, now)
    except BaseException:  # failed, timed out or told to stop: the next run may go at once
        release(svc, enrollment_id, step_index)
        raise


def _why_not(svc: Services, enrollment_id: int, step_index: int, now: datetime) -> Status:
    with svc.sessions() as session:
        row = session.get(SopEnrollment, enrollment_id)
    if row is None or row.status != EnrollmentStatus.ACTIVE or row.next_step != step_index:
        return "not_due"
    if row.next_due_at is not None and row.next_due_at > now:
        return "not_due"
    return "busy"


@dataclass(frozen=True)
class _Context:
    enrollment: SopEnrollment
    card: Card
    version: int
    view: CustomerView
    relation_status: str | None


def _load(svc: Services, enrollment_id: int) -> _Context:
    with svc.sessions() as session:
        row = session.get(SopEnrollment, enrollment_id)
        assert row is not None  # claimed a moment ago; enrollments are never deleted
        card = enrollment.card_for_version(session, row.card_version_id)
        version = session.scalar(
            select(SopCardVersion.version).where(SopCardVersion.id == row.card_version_id)
        )
        view = enrollment.customer_view(session, row.external_userid, row.advisor_userid, svc.settings)
        relation_status = session.scalar(
            select(FollowRelation.status).where(
                FollowRelation.advisor_userid == row.advisor_userid,
                FollowRelation.external_userid == row.external_userid,
            )
        )
        session.expunge(row)
    return _Context(row, card, int(version or 0), view, relation_status)


def _run_claimed(
    svc: Services, enrollment_id: int, step_index: int, attempt: int, now: datetime
) -> Status | Literal["completed"]:
    ctx = _load(svc, enrollment_id)
    e, card = ctx.enrollment, ctx.card
    if attempt > MAX_STEP_ATTEMPTS:
        return _exit(svc, ctx, "step_failed", now)
    if step_index >= len(card.steps):  # cannot happen with a pinned version; be safe
        return _exit(svc, ctx, "no_such_step", now)
    if ctx.relation_status != RelationStatus.ACTIVE:
        if ctx.relation_status == RelationStatus.TRANSFERRED:
            return _follow_transfer(svc, ctx, step_index, now)
        if ctx.relation_status == RelationStatus.LOST and card.exit.on_customer_left:
            return _exit(svc, ctx, "customer_left", now)
        if ctx.relation_status != RelationStatus.LOST:
            return _exit(svc, ctx, "removed" if ctx.relation_status else "no_relation", now)

    # Stale when a later step fell due after this one and is due already (the system was down or
    # behind). Steps that working / quiet hours move to the same moment are not stale: both run.
    own_due = enrollment.step_due_at(svc.settings, e.enrolled_at, card, step_index)
    if any(
        own_due < enrollment.step_due_at(svc.settings, e.enrolled_at, card, later) <= now
        for later in range(step_index + 1, len(card.steps))
    ):
        return _finish(svc, ctx, step_index, now, StepRunStatus.SKIPPED, None, [])

    reminder = _send_reminder(svc, ctx, step_index)
    results = [
        _run_action(svc, ctx, step_index, i, action)
        for i, action in enumerate(card.steps[step_index].actions)
    ]
    return _finish(svc, ctx, step_index, now, StepRunStatus.DONE, reminder, results)


def _follow_transfer(svc: Services, ctx: _Context, step_index: int, now: datetime) -> Status:
    """The customer was handed over and the consumer has not moved the enrollment yet (or the
    hand-over was made outside Dealer SCRM): continue with the advisor who has the customer now
    (the next sweep runs the step), or end the enrollment when nobody has them."""
    e = ctx.enrollment
    with svc.sessions.begin() as session:
        holder = session.scalars(
            select(FollowRelation.advisor_userid)
            .where(
                FollowRelation.external_userid == e.external_userid,
                FollowRelation.status == RelationStatus.ACTIVE,
            )
            .order_by(FollowRelation.added_at.desc(), FollowRelation.id.desc())
            .limit(1)
        ).first()
        if holder is not None:
            enrollment.move_enrollments(session, e.external_userid, e.advisor_userid, holder, now)
    if holder is None:
        return _exit(svc, ctx, "transferred", now)
    release(svc, e.id, step_index)
    return "waiting"


# -- the reminder ---------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[: limit - 3].decode(errors="ignore") + "…"


def _reply_text(reply: Any, values: dict[str, str]) -> str:
    if isinstance(reply, TextReply):
        return render(reply.text, values)
    if isinstance(reply, LinkReply):
        return f"[链接] {render(reply.title, values)}"
    if isinstance(reply, MiniProgramReply):
        return f"[小程序] {render(reply.title, values)}"
    if isinstance(reply, ImageReply):
        return f"[图片] {reply.title or ''}".strip()
    return ""


def sidebar_url(settings: Settings, external_userid: str, card_id: str, step_index: int) -> str:
    query = urlencode({"external_userid": external_userid, "card": card_id, "step": step_index})
    return settings.public_url(f"/sidebar?{query}")


def reminder_content(
    settings: Settings, card: Card, step_index: int, view: CustomerView
) -> tuple[str, str, str]:
    """(title, description, url) of the reminder card: the customer and the card in the title;
    the step's reminder and the first suggested replies in the description; a link to the
    sidebar for this customer and card. A pure function of what it reports (WeCom's duplicate
    check relies on it)."""
    values = view.values()
    step = card.steps[step_index]
    title = f"SOP提醒：{values['customer']} · {card.title}"
    head = f"{card.title} · 第{step_index + 1}/{len(card.steps)}步"
    if view.dealer_name:
        head += f" · {view.dealer_name}"
    parts = [
        f'<div class="gray">{html.escape(head)}</div>',
        f"<div>{html.escape(_clip(render(step.reminder, values).strip(), 240))}</div>",
    ]
    replies = [text for text in (_reply_text(r, values) for r in step.quick_replies) if text]
    if replies:
        quoted = " / ".join(_clip(" ".join(text.split()), 90) for text in replies[:SUGGESTED_REPLIES])
        parts.append(f'<div class="highlight">建议话术：{html.escape(quoted)}</div>')
    url = sidebar_url(settings, view.external_userid, card.id, step_index)
    return title, "".join(parts), url


def _send_reminder(svc: Services, ctx: _Context, step_index: int) -> dict[str, Any]:
    e = ctx.enrollment
    title, description, url = reminder_content(svc.settings, ctx.card, step_index, ctx.view)

    def send() -> dict[str, Any]:
        answer = notify.send_card(svc, [e.advisor_userid], title, description, url, button=REMINDER_BUTTON)
        return {
            "advisor": e.advisor_userid,
            "msgid": answer.get("msgid"),
            "invaliduser": answer.get("invaliduser") or "",
        }

    result, _ = effects.once(svc.sessions, f"sop-step:{e.id}:{step_index}:reminder", svc.clock.now(), send)
    if result.get("invaliduser"):
        log.warning(
            "SOP enrollment %s: WeCom did not deliver the reminder to %s", e.id, result["invaliduser"]
        )
    return result


# -- actions --------------------------------------------------------------------------------------


def _run_action(svc: Services, ctx: _Context, step_index: int, i: int, action: Any) -> dict[str, Any]:
    key = f"sop-step:{ctx.enrollment.id}:{step_index}:action:{i}"
    if isinstance(action, TagAction):
        return _tag(svc, ctx, key, action)
    if isinstance(action, SendAction):
        return _send(svc, ctx, key, action)
    if isinstance(action, StageAction):
        return {"type": "stage", "to": action.to}  # written with the step (the store only)
    return {"type": getattr(action, "type", "unknown"), "status": "unsupported"}


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    return [tuple(name.split(":", 1)) for name in names]  # type: ignore[misc]


def _live_tag_ids(svc: Services, names: list[str]) -> list[str]:
    """Ids of tags to remove: only tags that exist (a missing tag is not on anyone)."""
    found: list[str] = []
    with svc.sessions() as session:
        for group, name in _pairs(names):
            tag_id = session.scalar(
                select(CorpTag.tag_id)
                .where(CorpTag.group_name == group, CorpTag.name == name, CorpTag.deleted.is_(False))
                .order_by(CorpTag.group_id, CorpTag.tag_id)
                .limit(1)
            )
            if tag_id:
                found.append(tag_id)
    return found


def _tag(svc: Services, ctx: _Context, key: str, action: TagAction) -> dict[str, Any]:
    e = ctx.enrollment

    def mark() -> dict[str, Any]:
        add_ids = tagging.tag_ids_for(svc, _pairs(list(action.add))) if action.add else []
        remove_ids = [t for t in _live_tag_ids(svc, list(action.remove)) if t not in add_ids]
        result = {"type": "tag", "add_tag": add_ids, "remove_tag": remove_ids, "tags": list(action.add)}
        result["removed"] = list(action.remove)
        if not add_ids and not remove_ids:
            return {**result, "status": "nothing"}
        try:
            contact_client(svc).post(
                "externalcontact/mark_tag",
                data={
                    "userid": e.advisor_userid,
                    "external_userid": e.external_userid,
                    "add_tag": add_ids,
                    "remove_tag": remove_ids,
                },
            )
        except WeComError as exc:
            if exc.errcode in GONE:
                return {**result, "status": "gone", "errcode": exc.errcode}
            raise
        return {**result, "status": "marked"}

    result, _ = effects.once(svc.sessions, key, svc.clock.now(), mark)
    return result


def attachment_body(
    item: Any, values: dict[str, str], cover: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """A card attachment as add_msg_template takes it (doc 92135). ``cover`` turns a
    mini-program's cover address into a media id (WeCom takes no address there); without one a
    mini-program is a ValueError."""
    if isinstance(item, ImageReply):
        image = {"media_id": item.media_id} if item.media_id else {"pic_url": render(item.url or "", values)}
        return {"msgtype": "image", "image": image}
    if isinstance(item, LinkReply):
        link = {"title": render(item.title, values), "url": render(item.url, values)}
        if item.picurl:
            link["picurl"] = render(item.picurl, values)
        if item.desc:
            link["desc"] = render(item.desc, values)
        return {"msgtype": "link", "link": link}
    if isinstance(item, MiniProgramReply):
        if cover is None:
            raise ValueError("a mini-program's cover must be uploaded as media: give a cover resolver")
        return {
            "msgtype": "miniprogram",
            "miniprogram": {
                "title": render(item.title, values),
                "pic_media_id": cover(render(item.picurl, values)),
                "appid": item.appid,
                "page": render(item.page, values),
            },
        }
    raise ValueError(f"not an attachment: {item!r}")


def msg_template_body(
    action: SendAction, view: CustomerView, advisor_userid: str, cover: Callable[[str], str] | None = None
) -> dict[str, Any]:
    values = view.values()
    body: dict[str, Any] = {
        "chat_type": "single",
        "external_userid": [view.external_userid],
        "sender": advisor_userid,
        "text": {"content": render(action.text, values)},
    }
    if action.attachments:
        body["attachments"] = [attachment_body(item, values, cover) for item in action.attachments]
    return body


def _send(svc: Services, ctx: _Context, key: str, action: SendAction) -> dict[str, Any]:
    """One add_msg_template for the step's customer, once: the answer goes to the effects ledger.
    add_msg_template has no dedup handle, so the call is also marked as an attempt before it goes
    out (app/store/attempts.py); a run that finds an earlier attempt without an answer (its process
    died, or the answer was lost: OutcomeUnknown) looks for that attempt's task in WeCom first
    (app/wecom/msg_templates.py) and adopts it instead of giving the customer a second one."""
    e = ctx.enrollment
    customer = ctx.view.external_userid
    attempt_key = f"{key}:attempt"

    def call() -> dict[str, Any]:
        lease = timedelta(seconds=svc.settings.JOB_TIMEOUT + 30)
        attempt = attempts.begin_attempt(svc.sessions, attempt_key, svc.clock.now(), lease)
        try:
            found = None
            if attempt.since is not None:
                text = render(action.text, ctx.view.values())
                since = int(attempt.since.timestamp()) - 60
                until = int(svc.clock.time()) + 60
                found = find_task(contact_client(svc), e.advisor_userid, text, [customer], since, until)
            if found is not None:
                log.warning("SOP enrollment %s: an earlier attempt's task %s adopted", e.id, found.msgid)
                return {"msgid": found.msgid, "fail_list": []}
            # covers are resolved only when the ledger has no answer yet
            return media.send_with_covers(
                media.covers(svc),
                lambda cover: msg_template_body(action, ctx.view, e.advisor_userid, cover),
                lambda body: contact_client(svc).post("externalcontact/add_msg_template", data=body),
            )
        except (media.CoverError, WeComError):  # refused: nothing was made
            with svc.sessions.begin() as session:
                attempts.end_attempt(session, attempt_key, attempt.number)
            raise
        except BaseException:  # busy, timed out, unknown outcome …: the next run asks WeCom first
            attempts.expire_attempt(svc.sessions, attempt, svc.clock.now())
            raise

    def prepare() -> dict[str, Any]:
        try:
            answer = call()
        except media.CoverError as exc:
            # Another run would meet the same cover: the send fails, the step goes on.
            log.warning("SOP enrollment %s: send not prepared: %s", e.id, exc.reason)
            return {"type": "send", "status": "failed", "reason": exc.reason}
        except WeComError as exc:
            if exc.errcode in GONE:
                return {"type": "send", "status": "gone", "errcode": exc.errcode}
            if exc.errcode == NOBODY_TO_SEND:
                return {"type": "send", "status": "not_sendable", "errcode": exc.errcode}
            raise
        return {
            "type": "send",
            "status": "prepared",
            "msgid": answer.get("msgid"),
            "fail_list": answer.get("fail_list") or [],
        }

    result, ran = effects.once(svc.sessions, key, svc.clock.now(), prepare)
    if ran:  # the answer is in the ledger: the marker has done its job
        with svc.sessions.begin() as session:
            attempts.end_attempt(session, attempt_key)
    return result


# -- the store ------------------------------------------------------------------------------------


def _exit(svc: Services, ctx: _Context, reason: str, now: datetime) -> Status:
    e = ctx.enrollment
    with svc.sessions.begin() as session:
        result = session.execute(
            update(E)
            .where(E.c.id == e.id, E.c.status == EnrollmentStatus.ACTIVE)
            .values(
                status=EnrollmentStatus.EXITED,
                exit_reason=reason,
                next_due_at=None,
                lease_until=None,
                updated_at=now,
            )
        )
        if result.rowcount:
            interactions.append(session, [enrollment.exited_interaction(e, reason, now)], now)
    return "exited"


def _finish(
    svc: Services,
    ctx: _Context,
    step_index: int,
    now: datetime,
    status: str,
    reminder: dict[str, Any] | None,
    results: list[dict[str, Any]],
) -> Status | Literal["completed"]:
    e, card = ctx.enrollment, ctx.card
    common = {"card": card.id, "version": ctx.version, "step": step_index, "enrollment": e.id}
    last = step_index + 1 >= len(card.steps)
    with svc.sessions.begin() as session:
        # The claim: of two runs of this step only one inserts its row; the other writes nothing.
        claimed = session.execute(
            insert_for(session)(R)
            .values(
                enrollment_id=e.id,
                card_id=e.card_id,
                step_index=step_index,
                status=status,
                ran_at=now,
                reminder_msgid=(reminder or {}).get("msgid"),
            )
            .on_conflict_do_nothing(index_elements=[R.c.enrollment_id, R.c.step_index])
            .returning(R.c.id)
        ).scalar()
        if claimed is None:
            return "not_due"
        advance: dict[str, Any] = {
            "next_step": step_index + 1,
            "lease_until": None,
            "attempts": 0,
            "updated_at": now,
        }
        if last:
            advance.update(status=EnrollmentStatus.COMPLETED, next_due_at=None)
        else:
            advance["next_due_at"] = enrollment.step_due_at(svc.settings, e.enrolled_at, card, step_index + 1)
        # No row when the enrollment ended meanwhile (the customer left while the step ran): the
        # step's run is still recorded, but the enrollment is not also completed.
        advanced = session.execute(
            update(E)
            .where(E.c.id == e.id, E.c.status == EnrollmentStatus.ACTIVE, E.c.next_step == step_index)
            .values(**advance)
        ).rowcount

        def interaction(kind: str, key: str, payload: dict[str, Any]) -> NewInteraction:
            return NewInteraction(
                kind=kind,
                occurred_at=now,
                dedup_key=f"sop:{e.id}:{key}",
                advisor_userid=e.advisor_userid,
                external_userid=e.external_userid,
                dealer_code=e.dealer_code,
                payload=payload,
            )

        items: list[NewInteraction] = []
        if status == StepRunStatus.SKIPPED:
            items.append(
                interaction(
                    "sop_step_skipped",
                    f"{step_index}:skipped",
                    {**common, "reason": "the next step is due already"},
                )
            )
        else:
            items.append(
                interaction(
                    "sop_reminded",
                    f"{step_index}:reminded",
                    {**common, "msgid": (reminder or {}).get("msgid")},
                )
            )
            for i, (action, result) in enumerate(zip(card.steps[step_index].actions, results, strict=True)):
                if isinstance(action, StageAction):
                    change = _set_stage(session, e.external_userid, action.to, now)
                    result.update(
                        status="changed" if change else "unchanged", **({"from": change} if change else {})
                    )
                    if change is not None:
                        payload = {"from": change, "to": action.to, "by": f"sop:{card.id}", **common}
                        items.append(interaction("stage_changed", f"{step_index}:stage:{i}", payload))
                elif isinstance(action, TagAction) and result.get("status") == "marked":
                    _retag(
                        session, e.advisor_userid, e.external_userid, result["add_tag"], result["remove_tag"]
                    )
                    payload = {
                        "tag_ids": result["add_tag"],
                        "tags": result["tags"],
                        "removed_tag_ids": result["remove_tag"],
                        "removed": result["removed"],
                        "by": f"sop:{card.id}",
                        **common,
                    }
                    items.append(interaction("tagged", f"{step_index}:tagged:{i}", payload))
            items.append(interaction("sop_step_done", f"{step_index}:done", {**common, "actions": results}))
        if last and advanced:
            items.append(interaction("sop_completed", "completed", {**common, "steps": len(card.steps)}))
        interactions.append(session, items, now)
    if status == StepRunStatus.SKIPPED:
        return "skipped"
    return "completed" if last and advanced else "done"


def _set_stage(session: Session, external_userid: str, stage: str, now: datetime) -> str | None:
    """Move the customer to ``stage``; the previous stage ("" if none), or None if unchanged."""
    customer = session.get(Customer, external_userid, with_for_update=True)
    if customer is None:
        return None
    profile = dict(customer.profile or {})
    previous = profile.get("segment")
    if previous == stage:
        return None
    profile["segment"] = stage
    customer.profile = profile
    customer.updated_at = now
    session.flush()
    return previous or ""


def _retag(session: Session, advisor: str, external_userid: str, add: list[str], remove: list[str]) -> None:
    relation = session.scalars(
        select(FollowRelation).where(
            FollowRelation.advisor_userid == advisor, FollowRelation.external_userid == external_userid
        )
    ).first()
    if relation is None:
        return
    kept = [t for t in relation.tag_ids or [] if t not in set(remove)]
    relation.tag_ids = kept + [t for t in add if t not in kept]
    session.flush()

"""A submitted campaign's results, reminders and cancelling.

``poll`` goes through every batch whose advisor task is still open (``task_state = 'unsent'``):

- get_groupmsg_task (all pages): is the advisor's task sent (status 2; 1 in the doc's example)?
- sent: get_groupmsg_send_result (all pages) gives each customer's status: 1 ``sent``, 2
  ``not_friend``, 3 ``over_limit`` (WeCom's per-customer receiving limit), 0 ``not_sent``; the
  customers' rows and ``campaign_delivered`` / ``campaign_failed`` interactions are written and the
  batch's task is ``sent``;
- still unsent CAMPAIGN_TASK_EXPIRY seconds after submission: ``expired`` (its customers
  ``not_sent``, reason ``expired``); so is a task WeCom refuses for good to read (an invalid
  msgid: see ``refused_for_good``), which until then is skipped while the other tasks go on;
- still unsent CAMPAIGN_REMIND_AFTER seconds after submission (or after the last reminder):
  remind_groupmsg_send, at most ``MAX_REMINDERS`` (3) per batch in all — WeCom refuses a fourth
  within 24 hours with 45009, which our client would take for "busy" and retry;
- a ``waiting`` campaign with no open task left becomes ``done``.

``cancel``: a draft or scheduled campaign is cancelled by the state machine. A campaign already
handed to WeCom (submitting, waiting) is cancelled here — a conditional UPDATE on its state plus a
transition row, since ``states.TRANSITIONS`` keeps those moves for this step — its pending batches
are cancelled (never submitted), and each open task gets cancel_groupmsg_send and is read back: a
task the advisor confirmed before the cancel arrived keeps its results (what was sent stays sent),
the others' customers become ``cancelled``. A cancel WeCom refuses for good (an errcode another
try would repeat: the task was sent meanwhile, an invalid msgid; see ``refused_for_good``) is
logged and the task read back all the same: sent, its results are recorded; otherwise (or when
WeCom cannot read it either) it is closed as ``cancelled``, and the pass goes on with the other
tasks, so the campaign sweep does not enqueue that cancel again. Busy, 45009, 5xx, timeouts, 41063
(still being dispatched) and our own credential or permission errors are raised: the task stays
open and the sweep's next cancel tries again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.campaigns import states
from app.campaigns.submit import ACTOR, OPEN_BATCH, append_events, chunks, events
from app.services import Services
from app.store.campaign_models import Campaign, CampaignBatch, CampaignRecipient, CampaignTransition
from app.wecom.client import WeComClient, contact_client, cursor_pages
from app.wecom.errors import WeComApiFailure, WeComError

log = logging.getLogger(__name__)

MAX_REMINDERS = 3  # WeCom: three reminders per mass send within 24 hours
TASK_SENT = 2
TASK_SENT_STATUSES = (1, TASK_SENT)  # the doc text says 2, its example shows 1: accept either
WHO = (CampaignRecipient.external_userid, CampaignRecipient.advisor_userid, CampaignRecipient.dealer_code)
RESULT_STATUS = {0: "not_sent", 1: "sent", 2: "not_friend", 3: "over_limit"}
REASONS = {"not_sent": "not_sent", "not_friend": "not_friend", "over_limit": "over_limit"}


@dataclass
class PollReport:
    checked: int = 0
    sent: int = 0
    expired: int = 0
    cancelled: int = 0
    reminded: int = 0
    done: bool = False

    def __str__(self) -> str:
        return (
            f"{self.checked} task(s) checked: {self.sent} sent, {self.expired} expired, "
            f"{self.cancelled} cancelled, {self.reminded} reminded" + ("; campaign done" if self.done else "")
        )


# Refusals that say nothing final about the task: WeCom is still dispatching the send (41063),
# or our credentials, permissions or IP are wrong (every call fails alike until that is fixed).
NOT_FINAL = frozenset({41063, 40001, 40013, 40014, 41001, 42001, 48002, 60020, 301002})


def refused_for_good(exc: WeComError) -> bool:
    """A business errcode about this call that another try would only repeat."""
    return exc.errcode is not None and exc.errcode not in NOT_FINAL and exc.api != "gettoken"


def task_sent(client: WeComClient, msgid: str, advisor_userid: str) -> bool:
    tasks = cursor_pages(lambda cursor: client.get_groupmsg_task(msgid, cursor=cursor), "task_list")
    return any(t.get("userid") == advisor_userid and t.get("status") in TASK_SENT_STATUSES for t in tasks)


def send_results(client: WeComClient, msgid: str, advisor_userid: str) -> dict[str, str]:
    """{customer: sent | not_sent | not_friend | over_limit} of one advisor's task."""
    fetch = lambda cursor: client.get_groupmsg_send_result(msgid, advisor_userid, cursor=cursor)  # noqa: E731
    return {
        r["external_userid"]: RESULT_STATUS.get(int(r.get("status", 0)), "not_sent")
        for r in cursor_pages(fetch, "send_list")
    }


def poll(svc: Services, campaign_id: int, *, cancelling: bool = False, actor: str = ACTOR) -> PollReport:
    """One pass over the campaign's open tasks (see the module notes)."""
    report = PollReport()
    settings = svc.settings
    with svc.sessions() as session:
        batches = list(
            session.scalars(
                select(CampaignBatch)
                .where(CampaignBatch.campaign_id == campaign_id, CampaignBatch.task_state == "unsent")
                .order_by(CampaignBatch.advisor_userid, CampaignBatch.batch_no)
            )
        )
        session.expunge_all()
    client = contact_client(svc) if batches else None
    for batch in batches:
        report.checked += 1
        refused = None
        if cancelling:
            try:
                client.cancel_groupmsg_send(batch.msgid)
            except WeComError as exc:
                if not refused_for_good(exc):
                    raise
                log.warning("campaign %s: WeCom refused to cancel %s's task %s: %s",
                            batch.campaign_id, batch.advisor_userid, batch.msgid, exc)  # fmt: skip
                refused = exc
        now = svc.clock.now()
        expired = batch.submitted_at + timedelta(seconds=settings.CAMPAIGN_TASK_EXPIRY) <= now
        try:
            sent = task_sent(client, batch.msgid, batch.advisor_userid)
        except WeComError as exc:
            if not refused_for_good(exc):
                raise
            if refused is None:
                # WeCom will not read this task (an invalid msgid …): the other tasks go on, and
                # this one ends at its expiry instead of failing every poll of the campaign.
                log.warning("campaign %s: WeCom cannot read %s's task %s: %s",
                            batch.campaign_id, batch.advisor_userid, batch.msgid, exc)  # fmt: skip
                if expired:
                    close_task(svc, batch, "expired", "not_sent", "expired")
                    report.expired += 1
                continue
            sent = False  # WeCom knows no such task to cancel or read: close it as cancelled
        if sent:
            record_results(svc, batch, send_results(client, batch.msgid, batch.advisor_userid))
            report.sent += 1
        elif cancelling:
            close_task(svc, batch, "cancelled", "cancelled", "campaign cancelled")
            report.cancelled += 1
        elif expired:
            close_task(svc, batch, "expired", "not_sent", "expired")
            report.expired += 1
        elif _remind_due(batch, now, settings.CAMPAIGN_REMIND_AFTER) and remind(svc, client, batch, now):
            report.reminded += 1
    report.done = finish(svc, campaign_id, actor=actor)
    return report


def _remind_due(batch: CampaignBatch, now: datetime, after: int) -> bool:
    if batch.reminded_count >= MAX_REMINDERS:
        return False
    since = batch.last_reminded_at or batch.submitted_at
    return since + timedelta(seconds=after) <= now


def remind(svc: Services, client: WeComClient, batch: CampaignBatch, now: datetime) -> bool:
    try:
        client.remind_groupmsg_send(batch.msgid)
    except WeComApiFailure as exc:
        log.warning("campaign %s: reminding %s failed: %s", batch.campaign_id, batch.advisor_userid, exc)
        return False
    with svc.sessions.begin() as session:
        session.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch.id)
            .values(reminded_count=CampaignBatch.reminded_count + 1, last_reminded_at=now)
        )
    return True


def _in_batch(batch: CampaignBatch):
    return (
        CampaignRecipient.campaign_id == batch.campaign_id,
        CampaignRecipient.advisor_userid == batch.advisor_userid,
        CampaignRecipient.batch_no == batch.batch_no,
    )


def _close(session: Session, batch: CampaignBatch, task_state: str, now: datetime) -> bool:
    closed = session.execute(
        update(CampaignBatch)
        .where(CampaignBatch.id == batch.id, CampaignBatch.task_state == "unsent")
        .values(task_state=task_state, results_at=now)
        .execution_options(synchronize_session=False)
    )
    return closed.rowcount == 1


def record_results(svc: Services, batch: CampaignBatch, results: dict[str, str]) -> None:
    """A sent task's per-customer results, written once."""
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        if not _close(session, batch, "sent", now):
            return
        rows = session.execute(
            select(*WHO).where(*_in_batch(batch), CampaignRecipient.status == "submitted")
        ).all()
        by_status: dict[str, list[tuple[str, str, str | None]]] = {}
        for row in rows:
            by_status.setdefault(results.get(row[0], "not_sent"), []).append(tuple(row))
        items = []
        for status, group in by_status.items():
            reason = None if status == "sent" else status
            for part in chunks([r[0] for r in group]):
                session.execute(
                    update(CampaignRecipient)
                    .where(*_in_batch(batch), CampaignRecipient.status == "submitted",
                           CampaignRecipient.external_userid.in_(part))
                    .values(status=status, reason=reason, updated_at=now)
                )  # fmt: skip
            kind = "delivered" if status == "sent" else "failed"
            items += events(batch.campaign_id, kind, group, now, reason=reason)
        append_events(session, items, now)


def close_task(svc: Services, batch: CampaignBatch, task_state: str, status: str, reason: str) -> None:
    """An unsent task that will not be sent (expired, cancelled): its customers get ``status``."""
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        if not _close(session, batch, task_state, now):
            return
        rows = session.execute(
            select(*WHO).where(*_in_batch(batch), CampaignRecipient.status == "submitted")
        ).all()
        session.execute(
            update(CampaignRecipient)
            .where(*_in_batch(batch), CampaignRecipient.status == "submitted")
            .values(status=status, reason=reason, updated_at=now)
        )
        append_events(
            session, events(batch.campaign_id, "failed", [tuple(r) for r in rows], now, reason=reason), now
        )


def finish(svc: Services, campaign_id: int, *, actor: str = ACTOR) -> bool:
    """``waiting → done`` once no batch is open and no task unsent. True when it moved."""
    with svc.sessions() as session:
        if session.scalar(select(Campaign.state).where(Campaign.id == campaign_id)) != states.WAITING:
            return False
        open_left = session.scalar(
            select(CampaignBatch.id)
            .where(
                CampaignBatch.campaign_id == campaign_id,
                (CampaignBatch.status.in_(OPEN_BATCH)) | (CampaignBatch.task_state == "unsent"),
            )
            .limit(1)
        )
        if open_left is not None:
            return False
        try:
            states.move(session, campaign_id, states.WAITING, states.DONE, actor=actor, now=svc.clock.now())
        except states.StateConflict:
            return False
        session.commit()
        return True


# -- cancelling -------------------------------------------------------------------------------------------


def mark_cancelled(
    session: Session, campaign_id: int, *, actor: str, now: datetime, reason: str | None = None
) -> str:
    """Cancel the campaign in the store (the caller commits; ``cancel_tasks`` then stops the
    advisors' tasks in WeCom). Returns the state it left; StateConflict from done / cancelled."""
    current = session.scalar(select(Campaign.state).where(Campaign.id == campaign_id))
    if current in (states.DRAFT, states.SCHEDULED) or current is None:
        return states.move(session, campaign_id, (states.DRAFT, states.SCHEDULED), states.CANCELLED,
                           actor=actor, now=now, reason=reason)  # fmt: skip
    if current not in (states.SUBMITTING, states.WAITING):
        raise states.StateConflict(campaign_id, current, states.CANCELLED)
    moved = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.state == current)
        .values(state=states.CANCELLED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        raise states.StateConflict(
            campaign_id,
            session.scalar(select(Campaign.state).where(Campaign.id == campaign_id)),
            states.CANCELLED,
        )
    session.add(CampaignTransition(campaign_id=campaign_id, from_state=current, to_state=states.CANCELLED,
                                   actor=actor, reason=reason, at=now))  # fmt: skip
    pending = list(
        session.scalars(
            select(CampaignBatch).where(
                CampaignBatch.campaign_id == campaign_id, CampaignBatch.status == "pending"
            )
        )
    )
    for batch in pending:
        session.execute(
            update(CampaignBatch).where(CampaignBatch.id == batch.id, CampaignBatch.status == "pending")
            .values(status="cancelled")
        )  # fmt: skip
        session.execute(
            update(CampaignRecipient)
            .where(*_in_batch(batch), CampaignRecipient.status == "targeted")
            .values(status="cancelled", reason="campaign cancelled", updated_at=now)
        )
    session.flush()
    session.expire_all()  # the UPDATEs above bypassed the identity map
    return current


def cancel_tasks(svc: Services, campaign_id: int) -> PollReport:
    """cancel_groupmsg_send for every open task of a cancelled campaign, then read each back."""
    return poll(svc, campaign_id, cancelling=True)


def cancel(svc: Services, campaign_id: int, *, actor: str = ACTOR, reason: str | None = None) -> PollReport:
    """Cancel in the store and in WeCom, in this process."""
    with svc.sessions() as session:
        left = mark_cancelled(session, campaign_id, actor=actor, now=svc.clock.now(), reason=reason)
        session.commit()
    if left in (states.DRAFT, states.SCHEDULED):
        return PollReport()
    return cancel_tasks(svc, campaign_id)

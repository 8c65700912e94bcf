"""Submitting a campaign to WeCom (externalcontact/add_msg_template), exactly once per customer.

1. ``start``: ``scheduled → submitting`` and, in the same transaction, the audience is resolved
   from the store (active follow relations only) and frozen in ``campaign_recipients`` (status
   ``targeted``), grouped by the advisor it goes through and split into ``campaign_batches`` of at
   most CAMPAIGN_BATCH_SIZE customers (WeCom takes 10,000 external_userids per call). Inserts are
   ``ON CONFLICT DO NOTHING`` on (campaign, customer) and (campaign, advisor, batch_no), so a
   rerun adds nobody twice; a rerun of ``start`` on a campaign already ``submitting`` only lists
   the batches still pending. A filter that no longer resolves (``AudienceError``: a dealer,
   region or tag it names has left the store since the campaign was created) would fail every
   rerun alike, so the campaign goes ``scheduled → cancelled`` instead, the error as the
   transition's reason (``audience cannot be resolved: unknown dealer 'XX0'``); any other error
   (database or Redis down) is raised and the next sweep tries again.
2. ``submit_batch``: one call per batch, ``sender`` = the advisor, ``external_userid`` = the batch.
   a. the effects ledger is read first (key ``campaign:{id}:batch:{advisor}:{n}``): an answer
      there is applied without calling WeCom again;
   b. the batch is claimed: ``UPDATE … SET status='submitting', lease_until=now+JOB_TIMEOUT+30
      WHERE status='pending' OR (status='submitting' AND lease_until < now)``; a batch that is
      submitted, failed, cancelled or leased by a live job is left alone;
   c. mini-program covers given by address are resolved to media ids, once per job
      (app/wecom/media.py: cached in Redis, so a campaign uploads each cover once); a cover that
      cannot be used (HTTP 4xx, not a jpg/png, over 10 MB, refused by WeCom) fails the batch for
      good with that reason (``cover https://…/c.png: HTTP 404``, the customers'
      ``campaign_failed`` reason too); one whose host is down or slow is retried like a busy WeCom;
   d. the call goes out under the shared rate limiter (``contact_client``); busy / 45009 /
      no connection after the client's retries release the claim and raise (RQ retries the job,
      the campaign sweep re-enqueues it); a failure after which WeCom may have made the task
      anyway (a read timeout, a broken connection, a 5xx: the client's ``OutcomeUnknown``, raised
      without retrying) ends the claim's lease at once instead, so the next claim reconciles
      first (below); any other errcode fails the batch for good;
   e. WeCom's answer (msgid, fail_list, or the refusal) is written to the ledger in its own
      transaction, then applied: the batch becomes ``submitted`` (msgid, fail_list) and its
      customers ``submitted``, those in fail_list ``failed`` (reason ``fail_list``: not the
      advisor's customer in WeCom, or an invalid id).

The one gap WeCom leaves: add_msg_template has no idempotency key. If the process dies after
WeCom created the task and before the ledger write commits (the few milliseconds between reading
the HTTP answer and the commit), or the answer never came back (``OutcomeUnknown``), the batch
stays ``submitting``; when its lease runs out (at once for OutcomeUnknown), the next
claim first lists the advisor's sends since the campaign became ``submitting`` (get_groupmsg_list_v2:
by creator and time; so a claim that died or failed in between without looking narrows nothing)
and adopts the one with our text whose task holds the batch's customers (``_reconcile``), so the
customers do not get a second task. A look-up that fails (busy, rate-limited, an errcode) ends the
claim the same way, so the next one looks again. A cancelled campaign's batch is cancelled only
after that look-up found no task; a task it finds is adopted, then cancelled in WeCom (the campaign
sweep takes up such batches of cancelled campaigns too). The lease keeps this to dead processes
only (a live job or its RQ retry never re-submits a leased batch), and the ledger closes every
later point: once the answer is written, no rerun calls WeCom for that batch again.

Per-customer receiving limits are WeCom's to apply when the advisor confirms: those customers come
back from get_groupmsg_send_result with status 3 and are recorded ``over_limit`` (results.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.campaigns import audience, states
from app.campaigns.model import Content
from app.services import Services
from app.store import effects, interactions
from app.store.campaign_models import Campaign, CampaignBatch, CampaignRecipient, CampaignTransition
from app.store.db import insert_for
from app.store.interactions import NewInteraction
from app.wecom import media
from app.wecom.client import contact_client
from app.wecom.errors import OutcomeUnknown, WeComApiFailure, WeComError, WeComUnavailable
from app.wecom.msg_templates import find_task

log = logging.getLogger(__name__)

ACTOR = "worker"
CHUNK = 1000  # rows per INSERT / IN (…)
OPEN_BATCH = ("pending", "submitting")
LIST_SPAN = 30 * 24 * 3600  # get_groupmsg_list_v2: start_time to end_time at most one month
WHO = (CampaignRecipient.external_userid, CampaignRecipient.advisor_userid, CampaignRecipient.dealer_code)

# Test hook: called with the ledger key right after WeCom's answer is in the ledger (a test raises
# here to play a worker killed before it applied the answer).
after_ledger: Callable[[str], None] | None = None


@dataclass(frozen=True)
class BatchRef:
    campaign_id: int
    advisor_userid: str
    batch_no: int
    id: int


def ledger_key(campaign_id: int, advisor_userid: str, batch_no: int) -> str:
    return f"campaign:{campaign_id}:batch:{advisor_userid}:{batch_no}"


def chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def events(
    campaign_id: int, kind: str, rows: Iterable[tuple[str, str, str | None]], now: datetime,
    reason: str | None = None, reasons: dict[str, str] | None = None,
) -> list[NewInteraction]:  # fmt: skip
    """``campaign_<kind>`` interactions for (customer, advisor, dealer) rows, one per (campaign,
    customer, kind) by their dedup key."""
    out = []
    for ext, advisor, dealer in rows:
        why = (reasons or {}).get(ext, reason)
        payload: dict[str, Any] = {"campaign": campaign_id}
        if why is not None:
            payload["reason"] = why
        out.append(
            NewInteraction(
                kind=f"campaign_{kind}", occurred_at=now, dedup_key=f"campaign:{campaign_id}:{ext}:{kind}",
                advisor_userid=advisor, external_userid=ext, dealer_code=dealer, payload=payload,
            )
        )  # fmt: skip
    return out


def append_events(session: Session, items: list[NewInteraction], now: datetime) -> None:
    for part in chunks(items):
        interactions.append(session, part, now)


# -- 1. start: freeze the audience ------------------------------------------------------------------


def start(svc: Services, campaign_id: int, *, actor: str = ACTOR) -> list[BatchRef]:
    """Move a scheduled campaign to submitting and freeze its audience (one transaction); return
    the batches still to submit (for a campaign already submitting: the pending ones). A campaign
    in any other state gives [], and so does one whose filter no longer resolves (it is cancelled,
    see the module notes). LookupError if there is no such campaign."""
    now = svc.clock.now()
    with svc.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise LookupError(f"no campaign {campaign_id}")
        if campaign.state == states.SCHEDULED:
            try:
                states.move(session, campaign_id, states.SCHEDULED, states.SUBMITTING, actor=actor, now=now)
            except states.StateConflict:
                session.rollback()  # another worker started it: fall through to its batches
            else:
                try:
                    recipients = audience.resolve_audience(
                        session, campaign.spec["audience"], campaign.scope_dealer, svc.settings.intent_bands
                    )
                except audience.AudienceError as exc:  # a name in the filter left the store
                    session.rollback()
                    _cancel_unresolvable(session, campaign_id, exc, actor=actor, now=now)
                    return []
                freeze(session, campaign_id, recipients, svc.settings.CAMPAIGN_BATCH_SIZE, now)
                session.commit()
        state = session.scalar(select(Campaign.state).where(Campaign.id == campaign_id))
        if state != states.SUBMITTING:
            return []
        refs = pending_batches(session, campaign_id, now)
    if not refs:
        finish_submission(svc, campaign_id)
    return refs


def _cancel_unresolvable(
    session: Session, campaign_id: int, exc: audience.AudienceError, *, actor: str, now: datetime
) -> None:
    """``scheduled → cancelled`` with the filter's error as the reason: another try would meet the
    same error (a dealer, region or tag the filter names is no longer in the store)."""
    reason = f"audience cannot be resolved: {exc.message}"[:255]
    try:
        states.move(
            session, campaign_id, states.SCHEDULED, states.CANCELLED, actor=actor, now=now, reason=reason
        )
    except states.StateConflict:
        session.rollback()  # cancelled or started by someone else meanwhile
        return
    session.commit()
    log.warning("campaign %s cancelled: %s", campaign_id, reason)


def freeze(
    session: Session, campaign_id: int, recipients: list[audience.Recipient], batch_size: int, now: datetime
) -> int:
    """Write the recipients and their batches (the caller commits); return how many recipients."""
    insert = insert_for(session)
    rows, batches = [], []
    ordered = sorted(recipients, key=lambda r: (r.advisor_userid, r.external_userid))
    for advisor, group in groupby(ordered, key=lambda r: r.advisor_userid):
        mine = list(group)
        for batch_no, part in enumerate(chunks(mine, batch_size)):
            batches.append(
                dict(campaign_id=campaign_id, advisor_userid=advisor, batch_no=batch_no, size=len(part),
                     status="pending", attempts=0, reminded_count=0)
            )  # fmt: skip
            rows += [
                dict(campaign_id=campaign_id, external_userid=r.external_userid, advisor_userid=advisor,
                     dealer_code=r.dealer_code, batch_no=batch_no, status="targeted", updated_at=now)
                for r in part
            ]  # fmt: skip
    R, B = CampaignRecipient.__table__, CampaignBatch.__table__
    for part in chunks(rows):
        session.execute(
            insert(R).values(part).on_conflict_do_nothing(index_elements=["campaign_id", "external_userid"])
        )
    for part in chunks(batches):
        session.execute(
            insert(B)
            .values(part)
            .on_conflict_do_nothing(index_elements=["campaign_id", "advisor_userid", "batch_no"])
        )
    triples = [(r["external_userid"], r["advisor_userid"], r["dealer_code"]) for r in rows]
    append_events(session, events(campaign_id, "targeted", triples, now), now)
    return len(rows)


def pending_batches(session: Session, campaign_id: int, now: datetime) -> list[BatchRef]:
    """Batches a job should (still) submit: pending, or claimed under a lease that ran out."""
    rows = session.execute(
        select(CampaignBatch.advisor_userid, CampaignBatch.batch_no, CampaignBatch.id)
        .where(
            CampaignBatch.campaign_id == campaign_id,
            or_(
                CampaignBatch.status == "pending",
                and_(CampaignBatch.status == "submitting", CampaignBatch.lease_until < now),
            ),
        )
        .order_by(CampaignBatch.advisor_userid, CampaignBatch.batch_no)
    )
    return [BatchRef(campaign_id, advisor, n, pk) for advisor, n, pk in rows]


# -- 2. one batch ---------------------------------------------------------------------------------------


def message(spec: dict[str, Any], cover: Callable[[str], str] | None = None) -> dict[str, Any]:
    """add_msg_template's content fields from the stored spec; ``cover`` turns a mini-program's
    cover address into a media id (``media.covers(svc).media_id``)."""
    content = Content.model_validate(spec["content"])
    data: dict[str, Any] = {}
    if content.text:
        data["text"] = {"content": content.text}
    if content.attachments:
        data["attachments"] = [item.to_wecom(cover) for item in content.attachments]
    return data


def _text(spec: dict[str, Any]) -> dict[str, Any]:
    text = Content.model_validate(spec["content"]).text
    return {"text": {"content": text}} if text else {}


def submit_batch(svc: Services, campaign_id: int, advisor_userid: str, batch_no: int) -> str:
    """Submit one batch (see the module notes); returns what happened: ``submitted``,
    ``failed``, ``cancelled``, ``applied`` (from the ledger), ``skipped`` (not ours to send).
    Raises WeComUnavailable (the claim released) when WeCom stayed busy."""
    key = ledger_key(campaign_id, advisor_userid, batch_no)
    answer = effects.recorded(svc.sessions, key)
    outcome = "applied"
    if answer is None:
        claimed = _claim(svc, campaign_id, advisor_userid, batch_no)
        if claimed is None:
            return "skipped"
        batch_id, customers, spec, state, stale_since = claimed
        data = {"chat_type": "single", "sender": advisor_userid, "external_userid": customers}
        found = None
        if stale_since is not None:
            try:
                found = _reconcile(svc, advisor_userid, customers, {**data, **_text(spec)}, stale_since)
            except WeComApiFailure as exc:  # not looked: the next claim must look again, not send
                _expire_claim(svc, batch_id, str(exc))
                raise
        if state == states.CANCELLED and found is None:
            _cancel_batch(svc, batch_id)
            return "cancelled"
        try:
            if found is not None:
                answer = found
            else:
                result = media.send_with_covers(
                    media.covers(svc),
                    lambda cover: {**data, **message(spec, cover=cover)},
                    lambda body: contact_client(svc).post("externalcontact/add_msg_template", data=body),
                )
                answer = {"msgid": str(result["msgid"]), "fail_list": list(result.get("fail_list") or [])}
        except OutcomeUnknown as exc:  # WeCom may hold the task: the next claim must look first
            _expire_claim(svc, batch_id, str(exc))
            raise
        except WeComUnavailable as exc:  # a cover's host down or slow too (media.CoverUnavailable)
            _release(svc, batch_id, str(exc))
            raise
        except media.CoverError as exc:
            log.warning(
                "campaign %s batch %s/%s failed: %s", campaign_id, advisor_userid, batch_no, exc.reason
            )
            answer = {"errcode": None, "error": exc.reason[:200], "reason": exc.reason[:200]}
        except WeComError as exc:
            answer = {"errcode": exc.errcode, "error": str(exc)[:200]}
        answer = effects.record(svc.sessions, key, answer, svc.clock.now())
        if after_ledger is not None:
            after_ledger(key)
        outcome = "submitted" if "msgid" in answer else "failed"
    _apply(svc, campaign_id, advisor_userid, batch_no, answer)
    with svc.sessions() as session:
        state = session.scalar(select(Campaign.state).where(Campaign.id == campaign_id))
    if state == states.CANCELLED and "msgid" in answer:
        from app.campaigns import results  # cancelled while this batch was in flight: stop its task

        results.cancel_tasks(svc, campaign_id)
    finish_submission(svc, campaign_id)
    return outcome


def _claim(
    svc: Services, campaign_id: int, advisor_userid: str, batch_no: int
) -> tuple[int, list[str], dict[str, Any], str, int | None] | None:
    now = svc.clock.now()
    lease = now + timedelta(seconds=svc.settings.JOB_TIMEOUT + 30)
    with svc.sessions.begin() as session:
        batch = session.scalar(
            select(CampaignBatch).where(
                CampaignBatch.campaign_id == campaign_id,
                CampaignBatch.advisor_userid == advisor_userid,
                CampaignBatch.batch_no == batch_no,
            )
        )
        if batch is None:
            return None
        stale_since = None
        if batch.status == "pending":
            condition = CampaignBatch.status == "pending"
        elif batch.status == "submitting" and batch.lease_until is not None and batch.lease_until < now:
            condition = and_(
                CampaignBatch.status == "submitting", CampaignBatch.lease_until == batch.lease_until
            )
            # Every earlier claim (the one that may have made a task, and any that died or failed
            # since without looking) began after the campaign became submitting: look from then.
            started = session.scalar(
                select(func.min(CampaignTransition.at)).where(
                    CampaignTransition.campaign_id == campaign_id,
                    CampaignTransition.to_state == states.SUBMITTING,
                )
            )
            if started is None:  # the earlier claim began a lease's length before it ran out
                started = batch.lease_until - timedelta(seconds=svc.settings.JOB_TIMEOUT + 30)
            stale_since = int(started.timestamp()) - 60
            log.warning(
                "campaign %s batch %s/%s: a claim expired without an answer in the ledger; looking for "
                "its task in WeCom before submitting again",
                campaign_id, advisor_userid, batch_no,
            )  # fmt: skip
        else:
            return None
        claimed = session.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch.id, condition)
            .values(status="submitting", lease_until=lease, attempts=CampaignBatch.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            return None
        customers = list(
            session.scalars(
                select(CampaignRecipient.external_userid)
                .where(
                    CampaignRecipient.campaign_id == campaign_id,
                    CampaignRecipient.advisor_userid == advisor_userid,
                    CampaignRecipient.batch_no == batch_no,
                )
                .order_by(CampaignRecipient.external_userid)
            )
        )
        campaign = session.get(Campaign, campaign_id)
        return batch.id, customers, campaign.spec, campaign.state, stale_since


def _reconcile(
    svc: Services, advisor_userid: str, customers: list[str], data: dict[str, Any], since: int
) -> dict[str, Any] | None:
    """The task an earlier attempt made for this batch, if WeCom has one: that attempt held the
    claim from ``since`` and ended without writing WeCom's answer to the ledger (see
    app/wecom/msg_templates.py; an advisor's batches share the text, never a customer)."""
    text = (data.get("text") or {}).get("content", "")
    until = int(svc.clock.time()) + 60
    since = max(since, until - LIST_SPAN)  # get_groupmsg_list_v2 spans at most one month
    with svc.sessions() as session:
        # Tasks already recorded for batches (of any campaign and advisor): one with the same text
        # to the same customers must not be taken for this batch's lost one, and none of them
        # needs a look at its results (the list holds every send of the corp in the window).
        known = set(
            session.scalars(
                select(CampaignBatch.msgid).where(
                    CampaignBatch.msgid.is_not(None),
                    CampaignBatch.submitted_at >= datetime.fromtimestamp(since - 60, UTC),
                )
            )
        )
    found = find_task(contact_client(svc), advisor_userid, text, customers, since, until, known)
    if found is None:
        return None
    log.warning(
        "batch of %s: an earlier attempt's task %s found in WeCom; not submitting again",
        advisor_userid,
        found.msgid,
    )
    return {"msgid": found.msgid, "fail_list": sorted(set(customers) - found.customers), "reconciled": True}


def _expire_claim(svc: Services, batch_id: int, error: str) -> None:
    """End this claim's lease now but keep the batch ``submitting``: the next claim takes it as
    a stale one and reconciles (looks for the task WeCom may have made) before submitting."""
    with svc.sessions.begin() as session:
        session.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch_id, CampaignBatch.status == "submitting")
            .values(lease_until=svc.clock.now() - timedelta(seconds=1), error=error[:255])
        )


def _release(svc: Services, batch_id: int, error: str) -> None:
    with svc.sessions.begin() as session:
        session.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch_id, CampaignBatch.status == "submitting")
            .values(status="pending", lease_until=None, error=error[:255])
        )


def _cancel_batch(svc: Services, batch_id: int) -> None:
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        batch = session.get(CampaignBatch, batch_id)
        session.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch_id, CampaignBatch.status.in_(OPEN_BATCH))
            .values(status="cancelled", lease_until=None)
        )
        session.execute(
            update(CampaignRecipient)
            .where(
                CampaignRecipient.campaign_id == batch.campaign_id,
                CampaignRecipient.advisor_userid == batch.advisor_userid,
                CampaignRecipient.batch_no == batch.batch_no,
                CampaignRecipient.status == "targeted",
            )
            .values(status="cancelled", reason="campaign cancelled", updated_at=now)
        )


def _apply(
    svc: Services, campaign_id: int, advisor_userid: str, batch_no: int, answer: dict[str, Any]
) -> None:
    """Record WeCom's answer on the batch and its customers, once (a conditional UPDATE)."""
    now = svc.clock.now()
    in_batch = (
        CampaignRecipient.campaign_id == campaign_id,
        CampaignRecipient.advisor_userid == advisor_userid,
        CampaignRecipient.batch_no == batch_no,
    )
    with svc.sessions.begin() as session:
        values: dict[str, Any] = {"lease_until": None, "submitted_at": now}
        if "msgid" in answer:
            fail = set(answer.get("fail_list") or [])
            values.update(status="submitted", msgid=answer["msgid"], fail_list=sorted(fail), error=None)
        else:
            fail = set()
            values.update(status="failed", error=str(answer.get("error"))[:255])
        applied = session.execute(
            update(CampaignBatch)
            .where(
                CampaignBatch.campaign_id == campaign_id,
                CampaignBatch.advisor_userid == advisor_userid,
                CampaignBatch.batch_no == batch_no,
                CampaignBatch.status.in_(OPEN_BATCH),
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if applied.rowcount != 1:
            return  # applied by an earlier run (or cancelled before it was claimed)
        rows = session.execute(select(*WHO).where(*in_batch, CampaignRecipient.status == "targeted")).all()
        if "msgid" in answer:
            failed = [tuple(r) for r in rows if r[0] in fail]
            ok = [tuple(r) for r in rows if r[0] not in fail]
            for part in chunks(sorted(fail)):
                session.execute(
                    update(CampaignRecipient)
                    .where(*in_batch, CampaignRecipient.status == "targeted")
                    .where(CampaignRecipient.external_userid.in_(part))
                    .values(status="failed", reason="fail_list", msgid=answer["msgid"], updated_at=now)
                )
            session.execute(
                update(CampaignRecipient)
                .where(*in_batch, CampaignRecipient.status == "targeted")
                .values(status="submitted", msgid=answer["msgid"], updated_at=now)
            )
            session.execute(
                update(CampaignBatch)
                .where(CampaignBatch.campaign_id == campaign_id, CampaignBatch.batch_no == batch_no)
                .where(CampaignBatch.advisor_userid == advisor_userid)
                .values(task_state="unsent" if ok else "empty")
            )
            items = events(campaign_id, "submitted", ok, now) + events(
                campaign_id, "failed", failed, now, reason="fail_list"
            )
        else:
            reason = answer.get("reason") or f"errcode {answer.get('errcode')}"
            session.execute(
                update(CampaignRecipient)
                .where(*in_batch, CampaignRecipient.status == "targeted")
                .values(status="failed", reason=reason, updated_at=now)
            )
            items = events(campaign_id, "failed", [tuple(r) for r in rows], now, reason=reason)
        append_events(session, items, now)


def finish_submission(svc: Services, campaign_id: int, *, actor: str = ACTOR) -> bool:
    """``submitting → waiting`` once no batch is left to submit. True when it moved."""
    with svc.sessions() as session:
        state = session.scalar(select(Campaign.state).where(Campaign.id == campaign_id))
        if state != states.SUBMITTING:
            return False
        left = session.scalar(
            select(CampaignBatch.id)
            .where(CampaignBatch.campaign_id == campaign_id, CampaignBatch.status.in_(OPEN_BATCH))
            .limit(1)
        )
        if left is not None:
            return False
        try:
            states.move(
                session, campaign_id, states.SUBMITTING, states.WAITING, actor=actor, now=svc.clock.now()
            )
        except states.StateConflict:
            return False
        session.commit()
        return True


def run(svc: Services, campaign_id: int, *, actor: str = ACTOR) -> dict[str, int]:
    """Submit a campaign in this process (``scrm campaign run``): start, then every batch in turn.
    Returns the outcomes counted."""
    counts: dict[str, int] = {}
    for ref in start(svc, campaign_id, actor=actor):
        outcome = submit_batch(svc, ref.campaign_id, ref.advisor_userid, ref.batch_no)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts

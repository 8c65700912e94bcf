"""Dynamic contact codes (渠道活码) for landing pages: the advisor a visitor should add, and that
advisor's QR code for the page's state.

Each page view asks the engine anew (no ledger: nobody is assigned until the visitor adds the
advisor). The QR code of one (advisor, state) is made once through WeCom's add_contact_way — by a
worker, never the web process — stored in ``contact_ways`` and reused for every later view.

Making it exactly once (``create``, worker side):

1. ``contact_ways`` has the pair: done, WeCom is not asked.
2. The effects ledger has WeCom's answer (key ``contact-way:{advisor}:{state}``): an earlier run
   died between the ledger write and the insert; its config_id is stored, WeCom is not asked.
3. Otherwise the attempt is marked before any call (app/store/attempts.py; key
   ``contact-way-attempt:{advisor}:{state}``, its own transaction, the start on ``svc.clock``),
   leased for JOB_TIMEOUT + 30 s: longer than any live job runs, since RQ stops a job at
   JOB_TIMEOUT. A lease held by another run raises ``AttemptInProgress`` without calling WeCom (two
   jobs for one pair: the job id dedups page views, but two web processes that both find no job
   each enqueue it, and RQ runs both); RQ retries the job later, when the row is usually there.
4. A first attempt calls add_contact_way (type 1, scene 2, the advisor, the state, remark
   REMARK). A marker whose lease ran out without an answer in the ledger means an earlier attempt
   died around the call — add_contact_way has no idempotency key, so WeCom may already hold a
   contact way from it. That run asks WeCom first (``_reconcile``): list_contact_way from the
   first unanswered attempt's start minus RECONCILE_MARGIN to now (at most 90 days back, WeCom's
   limit), every page through next_cursor; get_contact_way for each config_id not already stored
   for another pair; the first whose state is ours, whose user is exactly [advisor] and whose remark
   is REMARK is adopted. Only if none is found does it call add_contact_way.
5. WeCom's answer (or the adopted way) goes to the ledger in its own transaction, then the row is
   inserted and the marker dropped in one transaction.

Failures: WeCom refusing add_contact_way (an errcode) made nothing, so the marker is dropped and
the error raised; a busy or unreachable WeCom, or anything else that may have left a contact way
behind, ends the lease at once (``expire_attempt``) so the next run reconciles without waiting. A
killed process leaves the lease to run out. What stays open: a contact way made more than 90 days
before the run that reconciles (WeCom lists no further back), and a live job that outlives its
lease (only possible outside RQ's timeout).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rq import Queue
from rq.job import JobStatus
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.intake import assign, matching
from app.intake import state as states
from app.services import Services
from app.store import attempts, effects
from app.store.db import insert_for
from app.store.models import Advisor, ContactWay
from app.wecom.client import contact_client, cursor_pages
from app.wecom.errors import WeComError
from workers.queues import HIGH, queue, retry_policy

log = logging.getLogger(__name__)

JOB = "workers.contact_way_jobs.create_contact_way"
REMARK = "dealer-scrm"
SEGMENT = "prospect"
_LIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
LEASE_MARGIN = 30  # seconds past JOB_TIMEOUT that an attempt's lease lasts (as a campaign batch's)
RECONCILE_MARGIN = 60  # seconds before the first unanswered attempt's start that WeCom is asked from
LIST_DAYS = 90  # list_contact_way reaches this far back at most
LIST_SLACK = 3600  # ...and we stay an hour inside that, for clock skew
CHUNK = 1000
INVALID_CONFIG_ID = 41044  # get_contact_way: no such contact way (deleted meanwhile)


class InvalidRequest(ValueError):
    """The request names an unknown dealer, model, city or channel (HTTP 400)."""


class NoAdvisor(LookupError):
    """Nobody in the territory can take a customer now (HTTP 409); the message says why."""


@dataclass(frozen=True)
class Choice:
    advisor: str
    advisor_name: str
    dealer: str
    state: str
    explanation: dict[str, Any]


def choose(
    svc: Services,
    *,
    channel: str = "lp",
    dealer: str | None = None,
    model: str | None = None,
    city: str | None = None,
) -> Choice:
    """The advisor for a page view (the engine, with today's load) and the state of the code."""
    roster = assign.roster_cache(svc).get(svc)
    if dealer:
        by_code = {code.lower(): code for code in roster.dealers}
        if dealer.lower() not in by_code:
            raise InvalidRequest(f"unknown dealer {dealer!r}")
        dealer = by_code[dealer.lower()]
    elif city:
        if not any(city == d.city or city in d.territory for d in roster.dealers.values()):
            raise InvalidRequest(f"unknown city {city!r}: no dealer serves it")
    else:
        raise InvalidRequest("dealer is required (or city, to let the engine pick the dealer)")
    if model:
        sold = {m.lower(): m for d in roster.dealers.values() for m in d.models}
        if model.lower() not in sold:
            raise InvalidRequest(f"unknown model {model!r}: no dealer sells it")
        model = sold[model.lower()]
    try:
        state = states.build(channel, dealer, model)
    except states.StateError as exc:
        raise InvalidRequest(str(exc)) from None

    customer = matching.Customer(dealer_code=dealer, city=city, model=model, segment=SEGMENT)
    with svc.sessions() as session:
        window = assign.pending_window(svc.settings)
        current = assign.loads(session, roster.candidates(customer), svc.clock.now(), pending_for=window)
        match = roster.match(customer, current)
        if match.chosen is None:
            raise NoAdvisor(match.reason)
        name = session.scalar(select(Advisor.name).where(Advisor.userid == match.chosen.userid))
    return Choice(
        advisor=match.chosen.userid,
        advisor_name=name or match.chosen.userid,
        dealer=match.chosen.dealer_code,
        state=state,
        explanation=match.explain(),
    )


def find(session: Session, advisor: str, state: str) -> ContactWay | None:
    return session.scalar(
        select(ContactWay).where(ContactWay.advisor_userid == advisor, ContactWay.state == state)
    )


def job_id(advisor: str, state: str) -> str:
    """RQ allows only [A-Za-z0-9_-] in job ids, and userids and states have dots: the readable
    part is made safe and a digest of the exact pair keeps distinct pairs apart."""
    digest = hashlib.sha256(f"{advisor}\0{state}".encode()).hexdigest()[:12]
    return f"contact-way-{_UNSAFE.sub('_', advisor)}-{_UNSAFE.sub('_', state)}-{digest}"


def request_creation(svc: Services, advisor: str, state: str) -> None:
    """Enqueue the job that makes the code, unless one for this pair is already waiting or
    running (concurrent page views share it). A job that ended (failed) is started afresh."""
    q = queue(HIGH, svc.redis)
    jid = job_id(advisor, state)
    job = q.fetch_job(jid)
    if job is not None:
        if job.get_status(refresh=False) in _LIVE:
            return
        job.delete()
    settings = svc.settings
    data = Queue.prepare_data(
        JOB,
        args=(advisor, state),
        job_id=jid,
        timeout=settings.JOB_TIMEOUT,
        retry=retry_policy(settings),
        result_ttl=600,
        failure_ttl=24 * 3600,
        description=f"create the contact way of {advisor} for {state}",
    )
    with svc.redis.pipeline() as pipe:
        q.enqueue_many([data], pipeline=pipe)
        pipe.execute()


def ledger_key(advisor: str, state: str) -> str:
    return f"contact-way:{advisor}:{state}"


def attempt_key(advisor: str, state: str) -> str:
    return f"contact-way-attempt:{advisor}:{state}"


def create(svc: Services, advisor: str, state: str) -> tuple[ContactWay, bool]:
    """(Worker side.) The code of (advisor, state), made through WeCom if it is not stored yet;
    returns it and whether this call made it (an adopted one was made by an earlier attempt). See
    the module notes; raises app.store.attempts.AttemptInProgress when another run holds the
    attempt."""
    with svc.sessions() as session:
        existing = find(session, advisor, state)
    if existing is not None:
        return existing, False

    key = ledger_key(advisor, state)
    result = effects.recorded(svc.sessions, key)
    made = False
    if result is None:
        answer, made = _obtain(svc, advisor, state)
        result = effects.record(svc.sessions, key, answer, svc.clock.now())
    with svc.sessions.begin() as session:
        insert = insert_for(session)
        session.execute(
            insert(ContactWay.__table__)
            .values(
                advisor_userid=advisor,
                state=state,
                config_id=result["config_id"],
                qr_code=result.get("qr_code"),
                created_at=svc.clock.now(),
            )
            .on_conflict_do_nothing(index_elements=["advisor_userid", "state"])
        )
        attempts.end_attempt(session, attempt_key(advisor, state))
        way = find(session, advisor, state)
    assert way is not None
    return way, made


def _obtain(svc: Services, advisor: str, state: str) -> tuple[dict[str, Any], bool]:
    """Under a fresh attempt marker: the contact way an earlier, unanswered attempt made (adopted),
    else a new one from add_contact_way. Returns (what goes to the ledger, whether it is new)."""
    lease = timedelta(seconds=svc.settings.JOB_TIMEOUT + LEASE_MARGIN)
    attempt = attempts.begin_attempt(svc.sessions, attempt_key(advisor, state), svc.clock.now(), lease)
    calling = False
    try:
        if attempt.since is not None:
            log.warning(
                "contact way %s / %s: attempt %d found an earlier one without an answer (since %s); "
                "asking WeCom for its contact way before making one",
                advisor, state, attempt.number, attempt.since.isoformat(),
            )  # fmt: skip
            found = _reconcile(svc, advisor, state, attempt.since)
            if found is not None:
                return found, False
        calling = True
        answer = contact_client(svc).add_contact_way(
            {"type": 1, "scene": 2, "user": [advisor], "state": state, "remark": REMARK, "skip_verify": True}
        )
    except WeComError as exc:
        if calling and exc.errcode is not None:  # add_contact_way refused: WeCom made nothing
            with svc.sessions.begin() as session:
                attempts.end_attempt(session, attempt.key, attempt.number)
        else:
            attempts.expire_attempt(svc.sessions, attempt, svc.clock.now())
        raise
    except Exception:  # busy, unreachable, timed out …: WeCom may have made one; ask it next time
        attempts.expire_attempt(svc.sessions, attempt, svc.clock.now())
        raise
    return {"config_id": answer["config_id"], "qr_code": answer.get("qr_code")}, True


def _reconcile(svc: Services, advisor: str, state: str, since: datetime) -> dict[str, Any] | None:
    """The contact way an earlier attempt made for (advisor, state), if WeCom has one: among the
    corp's contact ways created since that attempt began (list_contact_way, to the last page), one
    with our state, exactly this advisor as its user and our remark (get_contact_way). Config ids
    already stored for other pairs are not asked about."""
    client = contact_client(svc)
    now = int(svc.clock.time())
    start = int(since.timestamp()) - RECONCILE_MARGIN
    earliest = now - LIST_DAYS * 86400 + LIST_SLACK
    if start < earliest:
        log.warning(
            "contact way %s / %s: the earlier attempt began before WeCom's %d-day listing reaches; "
            "looking from %s only",
            advisor, state, LIST_DAYS, datetime.fromtimestamp(earliest, UTC).isoformat(),
        )  # fmt: skip
        start = earliest
    listed = [
        str(item["config_id"])
        for item in cursor_pages(
            lambda cursor: client.list_contact_way(start, now, cursor=cursor), "contact_way"
        )
    ]
    with svc.sessions() as session:
        taken: set[str] = set()
        for i in range(0, len(listed), CHUNK):
            part = listed[i : i + CHUNK]
            taken.update(session.scalars(select(ContactWay.config_id).where(ContactWay.config_id.in_(part))))
    for config_id in listed:
        if config_id in taken:
            continue
        try:
            way = client.get_contact_way(config_id)["contact_way"]
        except WeComError as exc:
            if exc.errcode == INVALID_CONFIG_ID:
                continue  # deleted since it was listed
            raise
        if way.get("state") == state and way.get("user") == [advisor] and way.get("remark") == REMARK:
            log.warning(
                "contact way %s / %s: adopting %s, made by an earlier attempt; not calling add_contact_way",
                advisor, state, config_id,
            )  # fmt: skip
            return {"config_id": config_id, "qr_code": way.get("qr_code"), "reconciled": True}
    return None

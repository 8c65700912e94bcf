"""Dynamic contact codes (渠道活码) for landing pages: the advisor a visitor should add, and that
advisor's QR code for the page's state.

Each page view asks the engine anew (no ledger: nobody is assigned until the visitor adds the
advisor). The QR code of one (advisor, state) is made once through WeCom's add_contact_way — by a
worker, never the web process — stored in ``contact_ways`` and reused for every later view.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from rq import Queue
from rq.job import JobStatus
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.intake import assign, matching
from app.intake import state as states
from app.services import Services
from app.store import effects
from app.store.db import insert_for
from app.store.models import Advisor, ContactWay
from app.wecom.client import contact_client
from workers.queues import HIGH, queue, retry_policy

JOB = "workers.contact_way_jobs.create_contact_way"
REMARK = "dealer-scrm"
SEGMENT = "prospect"
_LIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


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
        current = assign.loads(session, roster.candidates(customer), svc.clock.now())
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


def create(svc: Services, advisor: str, state: str) -> tuple[ContactWay, bool]:
    """(Worker side.) The code of (advisor, state), made through WeCom if it is not stored yet;
    returns it and whether this call made it. WeCom is called at most once per pair: the table
    is checked first, and the answer is kept in the effects ledger before it is stored, so a run
    that died between the call and the insert reuses the first config_id."""
    with svc.sessions() as session:
        existing = find(session, advisor, state)
    if existing is not None:
        return existing, False

    def call() -> dict[str, Any]:
        answer = contact_client(svc).post(
            "externalcontact/add_contact_way",
            data={
                "type": 1,
                "scene": 2,
                "user": [advisor],
                "state": state,
                "remark": REMARK,
                "skip_verify": True,
            },
        )
        return {"config_id": answer["config_id"], "qr_code": answer.get("qr_code")}

    result, made = effects.once(svc.sessions, f"contact-way:{advisor}:{state}", svc.clock.now(), call)
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
        way = find(session, advisor, state)
    assert way is not None
    return way, made

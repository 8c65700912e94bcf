"""Lead import (线索导入): validate each lead, store it once, give it an advisor, tell the advisor;
later, link it to the WeCom customer who added that advisor.

Each row gets its own outcome: a bad row gets its errors and never blocks the others.

1. Validate (``LeadIn``): fields, a Chinese mobile number, a known dealer and model.
2. Store once: ``lead_key`` (the source's id, else the source plus the phone hash or unionid and
   the model) is unique, so importing the same lead again changes nothing and is reported as a
   duplicate. Only the phone's keyed hash and its masked form are kept.
3. Assign: one stable decision per lead (in the effects ledger, ``assign:lead:<id>``), the
   assignment row, the lead's status and the ``lead_imported`` / ``assigned`` interactions in one
   transaction.
4. Enqueue the advisor's card (``workers.lead_jobs.notify_lead_advisor``).

Rows go through these steps in chunks of ``CHUNK`` (``import_chunk``), each step once per chunk:
one lead at a time took about 11 statements and 4 commits per lead, and the round trips were
nearly all of a 1000-lead request's time (bench/leads.py). Per chunk:

- ``store_many``: one INSERT … ON CONFLICT DO NOTHING of the chunk's leads (in key order, so two
  imports of overlapping leads wait for each other rather than deadlock) and one SELECT of the
  stored lead of every key, new or not; one commit.
- ``decide_in_order``: the decisions, in input order, in memory. Today's load of every advisor
  the chunk may go to is read once and each decision is counted into it before the next lead is
  decided (``assign.LoadBook``), so capacity_per_day and max_open_leads hold exactly as they do
  one lead at a time. A decision an earlier attempt kept in the ledger is reused, and counted.
  From this read to the commit of ``write_assignments`` the chunk holds the decision lock
  (``assign.decision_lock``), once per chunk: concurrent imports, workers and the lead sweep
  decide one after another, so the limits hold across processes too.
- ``write_assignments``: one transaction locks the leads (FOR UPDATE, in id order), and for
  those still ``new`` writes the decisions to the ledger (first writer wins: a lead another
  process decided keeps that decision), the assignment rows, the leads' status and their
  interactions; a lead that a concurrent import or the lead sweep finished meanwhile is left as
  it is.
- ``enqueue_cards``: one Redis pipeline for the chunk's cards. Leads that were already assigned
  get theirs again only if it was never sent and Redis knows no job for it (``ensure_cards``).

The leads are committed before they are assigned, and the decisions commit together with what
they decide, so a crash leaves either leads still ``new`` or assigned leads whose card job may be
missing, never an assigned lead without its interactions. Both are finished by the workers' lead
sweep (app/intake/lead_recovery.py, one lead at a time with ``assign_lead``) or by the next
import of the same leads, whichever comes first. ``import_one`` is the one-row-at-a-time path,
kept as the reference the chunks must agree with (tests/intake/test_lead_chunks.py).
"""

from __future__ import annotations

import html
import itertools
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from rq import Queue
from rq.job import Job
from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.intake import assign, matching, phones
from app.intake import state as states
from app.services import Services
from app.store import effects, interactions
from app.store.db import insert_for
from app.store.interactions import NewInteraction
from app.store.models import Advisor, Assignment, Dealer, Lead, LeadStatus
from workers.queues import DEFAULT, queue, retry_policy

CREATED, DUPLICATE, INVALID = "created", "duplicate", "invalid"

LINK_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read aloud or typed safely
LINK_LENGTH = 10
CARD_JOB = "workers.lead_jobs.notify_lead_advisor"
SEGMENT = "prospect"  # an imported lead has not bought yet

_SOURCE = re.compile(r"^[a-z0-9_-]{1,32}$")
_CAMPAIGN = re.compile(r"^[A-Za-z0-9_-]{1,24}$")


# -- validation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    """Dealer codes and the models dealers sell, as stored now; keys are lower-case so ``rav4``
    finds ``RAV4`` (the stored spelling is what the lead gets)."""

    dealers: dict[str, str]
    models: dict[str, str]

    @classmethod
    def load(cls, session: Session) -> Catalogue:
        dealers: dict[str, str] = {}
        models: dict[str, str] = {}
        for code, sold in session.execute(select(Dealer.code, Dealer.models)):
            dealers[code.lower()] = code
            for model in sold or []:
                models.setdefault(model.lower(), model)
        return cls(dealers, models)


class LeadIn(BaseModel):
    """One lead as a source sends it (JSON object or CSV row)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True)

    source: str | None = Field(default=None, validate_default=True)
    external_ref: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=64)
    phone: str | None = None
    unionid: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=32)
    city: str | None = Field(default=None, max_length=64)
    dealer: str | None = Field(default=None, max_length=32)
    budget: str | None = Field(default=None, max_length=32)
    intent: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    campaign: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_missing(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("is required (e.g. cdp, autohome, dongchedi, website)")
        value = value.lower()
        if not _SOURCE.match(value):
            raise ValueError("must be 1-32 of a-z 0-9 _ -")
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if value is None else phones.normalise(value)

    @field_validator("campaign")
    @classmethod
    def _campaign(cls, value: str | None) -> str | None:
        if value is not None and not _CAMPAIGN.match(value):
            raise ValueError("must be 1-24 of A-Z a-z 0-9 _ -")
        return value

    @field_validator("dealer")
    @classmethod
    def _dealer(cls, value: str | None, info: ValidationInfo) -> str | None:
        catalogue = info.context
        if value is None or not isinstance(catalogue, Catalogue):
            return value
        if value.lower() not in catalogue.dealers:
            raise ValueError(f"unknown dealer {value!r}")
        return catalogue.dealers[value.lower()]

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None, info: ValidationInfo) -> str | None:
        catalogue = info.context
        if value is None or not isinstance(catalogue, Catalogue):
            return value
        if value.lower() not in catalogue.models:
            raise ValueError(f"unknown model {value!r}: no dealer sells it")
        return catalogue.models[value.lower()]

    @model_validator(mode="after")
    def _identified(self) -> LeadIn:
        if not (self.phone or self.unionid or self.external_ref):
            raise ValueError("needs a phone, a unionid or an external_ref")
        return self


def validation_errors(exc: ValidationError) -> list[str]:
    """``field: message`` per error. Never quotes the input (it may be a phone number)."""
    out = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "lead"
        message = error["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {message}")
    return out


def lead_key(lead: LeadIn, phone_hash: str | None) -> str:
    """What makes a re-import of the same lead a duplicate."""
    if lead.external_ref:
        return f"{lead.source}:{lead.external_ref}"
    if phone_hash:
        return f"{lead.source}:phone:{phone_hash}:{lead.model or '-'}"
    return f"{lead.source}:unionid:{lead.unionid}:{lead.model or '-'}"


def new_link_token() -> str:
    return "".join(secrets.choice(LINK_ALPHABET) for _ in range(LINK_LENGTH))


def lead_state(lead: Lead) -> str:
    """The contact-way state of the lead's personal QR code (``ld.<token>``)."""
    return states.for_lead(lead.link_token)


# -- import ---------------------------------------------------------------------------------------


@dataclass
class RowResult:
    row: int
    status: str  # created | duplicate | invalid
    lead_id: int | None = None
    advisor: str | None = None
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "status": self.status,
            "lead_id": self.lead_id,
            "advisor": self.advisor,
            "errors": self.errors,
        }


@dataclass
class ImportReport:
    results: list[RowResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def created(self) -> int:
        return self.count(CREATED)

    @property
    def duplicates(self) -> int:
        return self.count(DUPLICATE)

    @property
    def invalid(self) -> int:
        return self.count(INVALID)

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [r.to_json() for r in self.results],
            "created": self.created,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
        }


CHUNK = 200  # rows per chunk: a few statements each, whose IN lists and multi-row INSERTs stay small
LINK_TOKEN_TRIES = 5


@dataclass(frozen=True)
class ValidRow:
    """A row that passed validation: its lead's key and the columns it is stored with."""

    number: int
    key: str
    columns: dict[str, Any]


def import_leads(
    svc: Services,
    rows: Iterable[tuple[int, Any]],
    *,
    default_source: str | None = None,
    on_result: Callable[[RowResult], None] | None = None,
    chunk_size: int = CHUNK,
) -> ImportReport:
    """Import ``(row number, fields)`` pairs, ``chunk_size`` rows at a time (``import_chunk``);
    every row gets its own outcome, in input order. ``default_source`` fills rows without a
    source; ``on_result(RowResult)`` is called for each row, in order, as its chunk finishes."""
    with svc.sessions() as session:
        catalogue = Catalogue.load(session)
    report = ImportReport()
    for chunk in _chunks(rows, chunk_size):
        for result in import_chunk(svc, chunk, catalogue, default_source=default_source):
            report.results.append(result)
            if on_result is not None:
                on_result(result)
    return report


def _chunks(rows: Iterable[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def import_chunk(
    svc: Services,
    rows: Sequence[tuple[int, Any]],
    catalogue: Catalogue,
    *,
    default_source: str | None = None,
) -> list[RowResult]:
    """Validate, store, assign and enqueue one chunk of rows, each step once for the chunk."""
    checked = [check_row(svc, number, fields, catalogue, default_source) for number, fields in rows]
    stored = store_many(svc, [row for row in checked if isinstance(row, ValidRow)])
    advisors = finish_leads(svc, [lead for lead, _ in stored.values()])
    results: list[RowResult] = []
    seen: set[str] = set()
    for row in checked:
        if isinstance(row, RowResult):
            results.append(row)
            continue
        lead, created = stored[row.key]
        status = CREATED if created and row.key not in seen else DUPLICATE
        seen.add(row.key)
        results.append(RowResult(row.number, status, lead.id, advisors[lead.id]))
    return results


def check_row(
    svc: Services, number: int, fields: Any, catalogue: Catalogue, default_source: str | None = None
) -> ValidRow | RowResult:
    """Validate one row: its ValidRow, or its ``invalid`` outcome with the errors."""
    if not isinstance(fields, Mapping):
        return RowResult(number, INVALID, errors=["lead: must be an object of lead fields"])
    data = dict(fields)
    if default_source and not (isinstance(data.get("source"), str) and data["source"].strip()):
        data["source"] = default_source
    try:
        lead = LeadIn.model_validate(data, context=catalogue)
    except ValidationError as exc:
        return RowResult(number, INVALID, errors=validation_errors(exc))
    key, columns = lead_columns(svc.settings, lead)
    return ValidRow(number, key, columns)


def lead_columns(settings: Settings, lead: LeadIn) -> tuple[str, dict[str, Any]]:
    """The lead's key and the columns it is stored with (a new lead's link token, status and
    times aside). The phone only as its keyed hash and its masked form."""
    phone_hash = phones.phone_hash(settings, lead.phone) if lead.phone else None
    key = lead_key(lead, phone_hash)
    return key, {
        "lead_key": key,
        "source": lead.source,
        "external_ref": lead.external_ref,
        "name": lead.name or "",
        "phone_hash": phone_hash,
        "phone_masked": phones.mask(lead.phone) if lead.phone else None,
        "unionid": lead.unionid,
        "model": lead.model,
        "city": lead.city,
        "dealer_code": lead.dealer,
        "budget": lead.budget,
        "intent": lead.intent,
        "campaign": lead.campaign,
    }


def _new_lead(now: datetime) -> dict[str, Any]:
    return {"link_token": new_link_token(), "status": LeadStatus.NEW, "created_at": now, "updated_at": now}


def store_many(svc: Services, rows: Sequence[ValidRow]) -> dict[str, tuple[Lead, bool]]:
    """Insert the leads whose keys are not stored yet and read back the stored lead of every
    key, in one transaction: key → (lead, whether this call created it), in the order the keys
    first occur in ``rows``. A key repeated within ``rows`` is stored once."""
    first: dict[str, ValidRow] = {}
    for row in rows:
        first.setdefault(row.key, row)
    if not first:
        return {}
    now = svc.clock.now()
    table = Lead.__table__
    created: set[str] = set()
    stored: dict[str, Lead] = {}
    # In key order: two imports of overlapping leads then wait for each other, never deadlock.
    pending = sorted(first)
    with svc.sessions.begin() as session:
        for _ in range(LINK_TOKEN_TRIES):
            # Skipped: a key already stored (a duplicate) or, rarely, a link token already taken.
            insert = insert_for(session)(table).on_conflict_do_nothing().returning(table.c.lead_key)
            values = [{**first[key].columns, **_new_lead(now)} for key in pending]
            created.update(session.scalars(insert, values))  # one multi-row INSERT (insertmanyvalues)
            found = session.scalars(select(Lead).where(Lead.lead_key.in_(pending)))
            stored.update((lead.lead_key, lead) for lead in found)
            pending = [key for key in pending if key not in stored]
            if not pending:
                return {key: (stored[key], key in created) for key in first}
            # The random link tokens of these were taken: draw others.
    raise RuntimeError(f"could not draw unused lead link tokens in {LINK_TOKEN_TRIES} tries")


def finish_leads(svc: Services, leads: Sequence[Lead]) -> dict[int, str | None]:
    """Assign the leads still ``new`` (``assign_many``) and see that the others' cards are on
    their way (``ensure_cards``); return each lead's advisor."""
    new = [lead for lead in leads if lead.status == LeadStatus.NEW]
    done = [lead for lead in leads if lead.status != LeadStatus.NEW]
    advisors = {lead.id: lead.advisor_userid for lead in done}
    advisors.update(assign_many(svc, new))
    ensure_cards(svc, done)
    return advisors


def assign_many(svc: Services, leads: Sequence[Lead]) -> dict[int, str | None]:
    """``assign_lead`` for many ``new`` leads, in their order: decide in memory
    (``decide_in_order``), write it all in one transaction (``write_assignments``), enqueue the
    cards in one Redis pipeline. Returns each lead's advisor."""
    if not leads:
        return {}
    now = svc.clock.now()
    assign.roster_cache(svc).get(svc)  # before the lock: a rebuild reads the whole roster
    # Once per chunk: reading the load, deciding and committing it all is one critical section,
    # so no other process decides on the load this chunk read before the chunk's rows commit.
    with assign.decision_lock(svc):
        decisions = decide_in_order(svc, leads, now)
        with svc.sessions.begin() as session:
            advisors, assigned = write_assignments(session, leads, decisions, now)
    enqueue_cards(svc, [lead.id for lead in assigned if lead.advisor_userid])
    return advisors


def decide_in_order(svc: Services, leads: Sequence[Lead], now: datetime) -> dict[int, assign.Decision]:
    """Each lead's advisor, in order: the decision in the ledger if an earlier attempt kept one,
    else the engine's under today's load plus the decisions made before it here."""
    customers = [lead_customer(lead) for lead in leads]
    subjects = [lead_subject(lead.id) for lead in leads]
    # The load leaves out these leads' own decisions in the ledger: they are counted below, once.
    book = assign.LoadBook.read(svc, customers, now, subjects=subjects)
    with svc.sessions() as session:
        earlier = assign.recorded_decisions(session, subjects)
    decisions: dict[int, assign.Decision] = {}
    for lead, customer in zip(leads, customers, strict=True):
        decision = earlier.get(lead_subject(lead.id))
        if decision is None:
            decision = book.decide(customer)
        else:
            book.count(decision)
        decisions[lead.id] = decision
    return decisions


def write_assignments(
    session: Session, leads: Sequence[Lead], decisions: Mapping[int, assign.Decision], now: datetime
) -> tuple[dict[int, str | None], list[Lead]]:
    """In the caller's transaction: lock the leads' rows and, for those still ``new``, keep the
    decisions in the ledger (first writer wins), write the assignment rows, the leads' status and
    their interactions. A lead that a concurrent import or the lead sweep finished meanwhile is
    left as it is. ``leads`` are the ``new`` leads as read before, not attached to ``session``:
    they are updated in memory and written with one executemany (``_update_leads``).
    Returns (each lead's advisor as it now stands, the leads assigned here)."""
    current = _lock_leads(session, [lead.id for lead in leads])
    advisors = {lead_id: advisor for lead_id, (_, advisor) in current.items()}
    new = [lead for lead in leads if current[lead.id][0] == LeadStatus.NEW]
    kept = assign.keep_decisions(session, {lead_subject(lead.id): decisions[lead.id] for lead in new}, now)
    assignments, items = [], []
    for lead in new:
        key = lead_subject(lead.id)
        assignments.append(
            assign.assignment_row(key, kept[key], reason="lead", status="assigned", now=now, lead_id=lead.id)
        )
        _apply(lead, kept[key], now)
        items.extend(_interactions(lead, kept[key], now))
        advisors[lead.id] = lead.advisor_userid
    assign.record_rows(session, assignments)
    _update_leads(session, new)
    interactions.append(session, items, now)
    return advisors, new


def _lock_leads(session: Session, lead_ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """Lock the leads' rows (FOR UPDATE, in id order: two transactions locking overlapping leads
    wait for each other, never deadlock); return each one's (status, advisor) as committed."""
    table = Lead.__table__
    rows = session.execute(
        select(table.c.id, table.c.status, table.c.advisor_userid)
        .where(table.c.id.in_(lead_ids))
        .order_by(table.c.id)
        .with_for_update()
    )
    return {lead_id: (status, advisor) for lead_id, status, advisor in rows}


def _update_leads(session: Session, leads: Sequence[Lead]) -> None:
    """Write what ``_apply`` set on these leads, one executemany for all of them."""
    if not leads:
        return
    table = Lead.__table__
    session.execute(
        table.update().where(table.c.id == bindparam("lead_id")),
        [
            {
                "lead_id": lead.id,
                "status": lead.status,
                "advisor_userid": lead.advisor_userid,
                "dealer_code": lead.dealer_code,
                "updated_at": lead.updated_at,
            }
            for lead in leads
        ],
    )


# -- one lead at a time ---------------------------------------------------------------------------


def import_one(
    svc: Services,
    number: int,
    fields: Any,
    catalogue: Catalogue,
    *,
    default_source: str | None = None,
) -> RowResult:
    """One row with its own transactions: how ``import_leads`` worked before chunks, kept as the
    reference they must agree with (tests/intake/test_lead_chunks.py, bench/leads.py)."""
    row = check_row(svc, number, fields, catalogue, default_source)
    if isinstance(row, RowResult):
        return row
    lead_id, created = _store(svc, row)
    advisor = assign_lead(svc, lead_id)
    return RowResult(row.number, CREATED if created else DUPLICATE, lead_id, advisor)


def _store(svc: Services, row: ValidRow) -> tuple[int, bool]:
    """Insert the lead unless its key is stored; return (id, whether it is new)."""
    now = svc.clock.now()
    table = Lead.__table__
    for _ in range(LINK_TOKEN_TRIES):
        with svc.sessions.begin() as session:
            new_id = session.scalar(
                insert_for(session)(table)
                .values(**row.columns, **_new_lead(now))
                .on_conflict_do_nothing()  # the key (a duplicate) or, rarely, the link token
                .returning(table.c.id)
            )
            if new_id is not None:
                return new_id, True
            existing = session.scalar(select(table.c.id).where(table.c.lead_key == row.key))
            if existing is not None:
                return existing, False
        # The random link token was taken: draw another.
    raise RuntimeError(f"could not draw an unused lead link token in {LINK_TOKEN_TRIES} tries")


def assign_lead(svc: Services, lead_id: int) -> str | None:
    """Give a new lead its advisor (stable: the ledger keeps the decision), write the assignment
    and the interactions, enqueue the card. A lead that is past ``new`` is left as it is. The
    lead sweep finishes leads with it, one at a time."""
    with svc.sessions() as session:
        lead = session.get(Lead, lead_id)
    assert lead is not None
    if lead.status != LeadStatus.NEW:
        ensure_card(svc, lead)
        return lead.advisor_userid
    key = lead_subject(lead_id)
    # Committed to the ledger under the decision lock; until the row below is written, the
    # decision counts towards its advisor's load from there (assign.loads).
    decision = assign.decide(svc, key, lead_customer(lead))
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        lead = session.get(Lead, lead_id, with_for_update=True)
        assert lead is not None
        if lead.status != LeadStatus.NEW:  # a concurrent import of the same lead finished it
            return lead.advisor_userid
        assign.record(session, key, decision, reason="lead", status="assigned", now=now, lead_id=lead_id)
        _apply(lead, decision, now)
        interactions.append(session, _interactions(lead, decision, now), now)
    if lead.advisor_userid:
        enqueue_card(svc, lead_id)
    return lead.advisor_userid


# -- what assigning a lead writes -----------------------------------------------------------------


def lead_subject(lead_id: int) -> str:
    """The lead's key in assignments and the decision ledger (``assign:lead:<id>``)."""
    return f"lead:{lead_id}"


def lead_customer(lead: Lead) -> matching.Customer:
    return matching.Customer(
        dealer_code=lead.dealer_code,
        city=lead.city,
        model=lead.model,
        intent=lead.intent,
        segment=SEGMENT,
    )


def _apply(lead: Lead, decision: assign.Decision, now: datetime) -> None:
    if decision.advisor:
        lead.status = LeadStatus.ASSIGNED
        lead.advisor_userid = decision.advisor
        lead.dealer_code = decision.dealer
    else:
        lead.status = LeadStatus.UNASSIGNED
    lead.updated_at = now


def _interactions(lead: Lead, decision: assign.Decision, now: datetime) -> list[NewInteraction]:
    imported = NewInteraction(
        kind="lead_imported",
        occurred_at=now,
        dedup_key=f"lead:{lead.id}:imported",
        advisor_userid=lead.advisor_userid,
        dealer_code=lead.dealer_code,
        payload={
            "lead_id": lead.id,
            "source": lead.source,
            "external_ref": lead.external_ref,
            "model": lead.model,
            "city": lead.city,
            "campaign": lead.campaign,
            "phone_masked": lead.phone_masked,
        },
    )
    assigned = NewInteraction(
        kind="assigned" if decision.advisor else "unassigned",
        occurred_at=now,
        dedup_key=f"lead:{lead.id}:assigned",
        advisor_userid=decision.advisor,
        dealer_code=decision.dealer or lead.dealer_code,
        payload={
            "subject": "lead",
            "lead_id": lead.id,
            "score": decision.score,
            "explanation": decision.explanation,
        },
    )
    return [imported, assigned]


# -- the advisor's card ---------------------------------------------------------------------------


def card_job_id(lead_id: int) -> str:
    return f"lead-card-{lead_id}"


def card_effect_key(lead_id: int) -> str:
    return f"lead-card:{lead_id}"


def enqueue_card(svc: Services, lead_id: int) -> None:
    enqueue_cards(svc, [lead_id])


def enqueue_cards(svc: Services, lead_ids: Sequence[int]) -> None:
    """The cards of these leads, in one Redis pipeline (MULTI/EXEC: all of them or none)."""
    if not lead_ids:
        return
    settings = svc.settings
    jobs = [
        Queue.prepare_data(
            CARD_JOB,
            args=(lead_id,),
            job_id=card_job_id(lead_id),
            timeout=settings.JOB_TIMEOUT,
            retry=retry_policy(settings),
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            description=f"send the card of lead {lead_id} to its advisor",
        )
        for lead_id in lead_ids
    ]
    with svc.redis.pipeline() as pipe:
        queue(DEFAULT, svc.redis).enqueue_many(jobs, pipeline=pipe)
        pipe.execute()


def ensure_card(svc: Services, lead: Lead) -> bool:
    """Enqueue the card again if it was never sent and no job for it is known to Redis (the
    enqueue was lost, or a failed job's record expired). True when it enqueued one."""
    return bool(ensure_cards(svc, [lead]))


def ensure_cards(svc: Services, leads: Sequence[Lead]) -> list[int]:
    """``ensure_card`` for many leads: one ledger query, one Redis round trip to look for their
    jobs, one pipeline to enqueue the missing. Returns the ids of the leads whose card it enqueued."""
    waiting = [
        lead.id
        for lead in leads
        if lead.status in (LeadStatus.ASSIGNED, LeadStatus.LINKED) and lead.advisor_userid
    ]
    if not waiting:
        return []
    with svc.sessions() as session:
        sent = effects.recorded_many(session, [card_effect_key(lead_id) for lead_id in waiting])
    unsent = [lead_id for lead_id in waiting if card_effect_key(lead_id) not in sent]
    if not unsent:
        return []
    with svc.redis.pipeline(transaction=False) as pipe:
        for lead_id in unsent:
            pipe.exists(Job.key_for(card_job_id(lead_id)))
        known = pipe.execute()
    missing = [lead_id for lead_id, exists in zip(unsent, known, strict=True) if not exists]
    enqueue_cards(svc, missing)
    return missing


SOURCE_LABELS = {"cdp": "CDP", "autohome": "汽车之家", "dongchedi": "懂车帝", "website": "官网"}
COMPONENT_LABELS = {
    "model": "车型专长",
    "language": "语言",
    "segment": "客群",
    "persona": "客户画像",
    "seniority": "资深",
    "spare_capacity": "空闲度",
    "acceptance": "接待率",
    "response": "响应速度",
}


def why(explanation: Mapping[str, Any], top: int = 3) -> str:
    """The chosen advisor's largest score components: ``空闲度 +11.4 · 车型专长 +3.0``."""
    chosen = explanation.get("chosen") or {}
    breakdown = chosen.get("breakdown") or {}
    parts = sorted(((v, k) for k, v in breakdown.items() if v and v > 0), key=lambda p: (-p[0], p[1]))
    text = " · ".join(f"{COMPONENT_LABELS.get(k, k)} +{v:.1f}" for v, k in parts[:top])
    if explanation.get("rerouted"):
        text = (text + " · " if text else "") + "本店无此车型，转至最近门店"
    return text or "—"


@dataclass(frozen=True)
class Card:
    title: str
    description: str
    url: str


def card(settings: Settings, lead: Lead, explanation: Mapping[str, Any]) -> Card:
    """The advisor's textcard: a pure function of the stored lead and assignment, so a job that
    runs again sends the same content (WeCom's duplicate check then drops it). Masked phone only."""

    def show(value: Any) -> str:
        return html.escape(str(value)) if value not in (None, "") else "—"

    intent = f"{lead.intent:g}" if lead.intent is not None else None
    source = SOURCE_LABELS.get(lead.source, lead.source)
    campaign = f" · 活动 {lead.campaign}" if lead.campaign else ""
    description = "".join(
        [
            f'<div class="gray">来源：{show(source)}{html.escape(campaign)}</div>',
            f'<div class="normal">城市：{show(lead.city)} · 预算：{show(lead.budget)}'
            f" · 意向分：{show(intent)}</div>",
            f'<div class="normal">手机：{show(lead.phone_masked)}</div>',
            f'<div class="highlight">分配依据：{html.escape(why(explanation))}</div>',
        ]
    )
    title = f"新线索：{lead.name or '客户'} · {lead.model or '车型未定'}"
    return Card(title, description, settings.public_url(f"/leads/{lead.id}"))


def assignment_for(session: Session, lead_id: int) -> Assignment | None:
    return session.scalar(select(Assignment).where(Assignment.dedup_key == f"lead:{lead_id}"))


# -- linking to the WeCom customer ----------------------------------------------------------------


def link_on_add(
    session: Session,
    *,
    external_userid: str,
    unionid: str | None,
    state: states.State,
    advisor_userid: str,
    now: datetime,
) -> Lead | None:
    """The lead a customer who just added ``advisor_userid`` came from: by the lead's personal
    state (``ld.<token>``), else the most recent open lead with the customer's unionid. It is
    marked linked to the customer (in the caller's transaction); a lead without an advisor takes
    the one who was added. None when nothing matches, or when the lead's code was already used by
    another customer. Calling it again for the same customer returns the same lead, unchanged."""
    lead: Lead | None = None
    if state.channel == states.LEAD_CHANNEL and state.lead_token:
        lead = session.scalar(select(Lead).where(Lead.link_token == state.lead_token).with_for_update())
    if lead is None and unionid:
        # The most recent lead of this unionid that is open, or already linked to this customer
        # (then an earlier call linked it, and this one returns it as it is).
        lead = session.scalar(
            select(Lead)
            .where(
                Lead.unionid == unionid,
                or_(
                    Lead.status.in_((LeadStatus.ASSIGNED, LeadStatus.UNASSIGNED)),
                    and_(Lead.status == LeadStatus.LINKED, Lead.external_userid == external_userid),
                ),
            )
            .order_by(Lead.created_at.desc(), Lead.id.desc())
            .limit(1)
            .with_for_update()
        )
    if lead is None:
        return None
    if lead.status == LeadStatus.LINKED:
        return lead if lead.external_userid == external_userid else None
    lead.status = LeadStatus.LINKED
    lead.external_userid = external_userid
    lead.linked_at = now
    lead.updated_at = now
    if not lead.advisor_userid:
        lead.advisor_userid = advisor_userid
        dealer = session.scalar(select(Advisor.dealer_code).where(Advisor.userid == advisor_userid))
        lead.dealer_code = dealer or lead.dealer_code
    session.flush()
    return lead


def lead_for_customer(session: Session, external_userid: str) -> Lead | None:
    """The most recent lead linked to this customer."""
    return session.scalar(
        select(Lead)
        .where(Lead.external_userid == external_userid)
        .order_by(Lead.linked_at.desc(), Lead.id.desc())
        .limit(1)
    )

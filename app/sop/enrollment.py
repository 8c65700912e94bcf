"""Enrollment: customers in SOP cards, once per card per customer, pinned to a card version.

A trigger (``TriggerEvent``: what happened to which customer, read from the interaction log by
app/sop/triggers.py, or ``manual``) enrolls the customer in every card whose current version has
that trigger and whose audience the customer is in. The enrollment row pins the version it
started with (``card_version_id``): a card loaded again later changes new enrollments only.
``UNIQUE(card_id, external_userid)`` makes enrollment once per card per customer: the insert is
``ON CONFLICT DO NOTHING``, so the same trigger read twice, or by two consumers at once, enrolls
once. Each new enrollment writes the interaction ``sop_enrolled``.

The customer's profile for the audience: stage (``customers.profile["segment"]``), intent band
(``profile["intent_band"]``, else from ``profile["intent"]``), model, the dealer of the follow
relation (else of the advisor, else the profile's) and its region, and the corp tags on the
active follow relation as ``组名:标签名``.

Exits (``exit_enrollments``) end active enrollments early, with a reason and ``sop_exited``;
``move_enrollments`` gives them to another advisor after a hand-over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.intake.tagging import tag_names
from app.services import Services
from app.sop import schedule
from app.sop.card import Card
from app.sop.versions import card_of
from app.store import interactions
from app.store.db import insert_for
from app.store.interactions import NewInteraction
from app.store.models import (
    Advisor,
    Customer,
    Dealer,
    FollowRelation,
    RelationStatus,
    SopCard,
    SopCardVersion,
)
from app.store.sop_models import EnrollmentStatus, SopEnrollment

E = SopEnrollment.__table__

# Intent score (0-100) → band when the profile has a score but no band: INTENT_BANDS when the
# settings have it (app/insight/intent.py), else these (its defaults: medium from 40, high from 70).
DEFAULT_BAND_FLOORS = (40.0, 70.0)
DEFAULT_NAME = "客户"


# -- cards ----------------------------------------------------------------------------------------

_cards: dict[tuple[int, str], Card] = {}
_CACHE_MAX = 4096


def card_for_version(session: Session, version_id: int, digest: str | None = None) -> Card:
    """The validated card a stored version holds. Versions never change, so each is parsed once
    per process (keyed by id and content hash: a database rebuilt under the same ids, as in
    tests, is not confused with the old one)."""
    if digest is None:
        digest = session.scalar(select(SopCardVersion.content_hash).where(SopCardVersion.id == version_id))
        if digest is None:
            raise LookupError(f"SOP card version {version_id} is not stored")
    card = _cards.get((version_id, digest))
    if card is None:
        version = session.get(SopCardVersion, version_id)
        if version is None:
            raise LookupError(f"SOP card version {version_id} is not stored")
        card = card_of(version)
        if len(_cards) >= _CACHE_MAX:
            _cards.clear()
        _cards[(version_id, digest)] = card
    return card


@dataclass(frozen=True)
class CurrentCard:
    card_id: str
    version_id: int
    version: int
    card: Card


def current_cards(session: Session) -> list[CurrentCard]:
    """Every loaded card's current version (what new enrollments get), by card id."""
    rows = session.execute(
        select(SopCardVersion.id, SopCardVersion.card_id, SopCardVersion.version, SopCardVersion.content_hash)
        .join(SopCard, SopCard.current_version_id == SopCardVersion.id)
        .order_by(SopCardVersion.card_id)
    ).all()
    return [
        CurrentCard(card_id, vid, number, card_for_version(session, vid, digest))
        for vid, card_id, number, digest in rows
    ]


def step_due_at(settings: Settings, enrolled_at: datetime, card: Card, index: int) -> datetime:
    """When step ``index`` of ``card`` is due for an enrollment made at ``enrolled_at`` (UTC)."""
    return schedule.step_due(
        enrolled_at, card.steps[index].offset, settings.sop_working_hours, settings.sop_quiet_hours
    )


# -- the customer, as an audience sees them --------------------------------------------------------


def band_of(profile: dict[str, Any], settings: Settings | None = None) -> str | None:
    """The intent band of a profile: ``intent_band`` if set, else from the ``intent`` score."""
    band = profile.get("intent_band")
    if band in ("low", "medium", "high"):
        return band
    score = profile.get("intent")
    if not isinstance(score, int | float) or isinstance(score, bool):
        return None
    medium_from, high_from = getattr(settings, "intent_bands", None) or DEFAULT_BAND_FLOORS
    return "high" if score >= high_from else "medium" if score >= medium_from else "low"


@dataclass(frozen=True)
class CustomerView:
    """A customer with one advisor (the follow relation), as audiences and texts see them."""

    external_userid: str
    name: str
    advisor_userid: str | None
    advisor_name: str
    relation_active: bool
    dealer_code: str | None
    dealer_name: str
    region: str | None
    model: str | None
    stage: str | None
    band: str | None
    tags: frozenset[str] = field(default_factory=frozenset)

    def in_audience(self, card: Card, *, stage: str | None = None, band: str | None = None) -> bool:
        return card.audience.matches(
            self.tags,
            stage=stage or self.stage,
            band=band or self.band,
            model=self.model,
            dealer=self.dealer_code,
            region=self.region,
        )

    def values(self) -> dict[str, str]:
        """What the placeholders of card texts are filled with."""
        return {
            "customer": self.name or DEFAULT_NAME,
            "advisor": self.advisor_name,
            "dealer": self.dealer_name,
            "model": self.model or "",
        }


def customer_view(
    session: Session,
    external_userid: str,
    advisor_userid: str | None = None,
    settings: Settings | None = None,
) -> CustomerView:
    """The customer with ``advisor_userid`` (or, without one, with the advisor of their most
    recent active follow relation)."""
    customer = session.get(Customer, external_userid)
    profile = dict(customer.profile or {}) if customer is not None else {}
    stmt = select(FollowRelation).where(FollowRelation.external_userid == external_userid)
    if advisor_userid:
        stmt = stmt.where(FollowRelation.advisor_userid == advisor_userid)
    else:
        stmt = stmt.where(FollowRelation.status == RelationStatus.ACTIVE).order_by(
            FollowRelation.added_at.desc(), FollowRelation.id.desc()
        )
    relation = session.scalars(stmt.limit(1)).first()
    userid = advisor_userid or (relation.advisor_userid if relation else None)
    advisor = session.get(Advisor, userid) if userid else None
    dealer_code = (
        (relation.dealer_code if relation else None)
        or (advisor.dealer_code if advisor else None)
        or profile.get("dealer")
    )
    dealer = session.get(Dealer, dealer_code) if dealer_code else None
    tags: frozenset[str] = frozenset()
    if relation is not None and relation.tag_ids:
        tags = frozenset(f"{group}:{name}" for group, name in tag_names(session, relation.tag_ids).values())
    return CustomerView(
        external_userid=external_userid,
        name=(customer.name if customer else "") or "",
        advisor_userid=userid,
        advisor_name=(advisor.name if advisor else userid) or "",
        relation_active=relation is not None and relation.status == RelationStatus.ACTIVE,
        dealer_code=dealer_code,
        dealer_name=dealer.name if dealer else (dealer_code or ""),
        region=dealer.region if dealer else None,
        model=profile.get("model"),
        stage=profile.get("segment"),
        band=band_of(profile, settings),
        tags=tags,
    )


# -- triggers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TriggerEvent:
    """Something that may enroll a customer: a card trigger kind (``contact_added``, ``tag_added``,
    ``stage_changed``, ``intent_band``, ``lead_assigned``, ``no_reply``, ``manual``) with what it
    carries, and the interaction it was read from."""

    kind: str
    external_userid: str
    advisor_userid: str | None = None
    interaction_id: int | None = None
    tags: frozenset[str] = frozenset()  # tag_added: tags the customer got
    stage: str | None = None  # stage_changed: the new stage
    band: str | None = None  # intent_band: the band crossed into
    days: int | None = None  # no_reply: days without a reply

    def fires(self, card: Card) -> bool:
        """Whether this event is the card's trigger."""
        trigger = card.trigger
        if trigger.on != self.kind:
            return False
        if trigger.on == "tag_added":
            return trigger.tag in self.tags
        if trigger.on == "stage_changed":
            return trigger.stage == self.stage
        if trigger.on == "intent_band":
            return trigger.band == self.band
        if trigger.on == "no_reply":
            return self.days is not None and self.days >= trigger.days
        return True



def _enroll_row(
    session: Session,
    settings: Settings,
    current: CurrentCard,
    view: CustomerView,
    event: TriggerEvent,
    now: datetime,
) -> SopEnrollment | None:
    """Insert the enrollment unless the customer was ever enrolled in the card; with
    ``sop_enrolled``. None when they were."""
    due = step_due_at(settings, now, current.card, 0)
    new_id = session.execute(
        insert_for(session)(E)
        .values(
            card_id=current.card_id,
            card_version_id=current.version_id,
            external_userid=view.external_userid,
            advisor_userid=view.advisor_userid,
            dealer_code=view.dealer_code,
            status=EnrollmentStatus.ACTIVE,
            trigger_kind=event.kind,
            trigger_interaction_id=event.interaction_id,
            enrolled_at=now,
            next_step=0,
            next_due_at=due,
            attempts=0,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[E.c.card_id, E.c.external_userid])
        .returning(E.c.id)
    ).scalar()
    if new_id is None:
        return None
    interactions.append(
        session,
        [
            NewInteraction(
                kind="sop_enrolled",
                occurred_at=now,
                dedup_key=f"sop:{new_id}:enrolled",
                advisor_userid=view.advisor_userid,
                external_userid=view.external_userid,
                dealer_code=view.dealer_code,
                payload={
                    "card": current.card_id,
                    "version": current.version,
                    "enrollment": new_id,
                    "trigger": event.kind,
                    "source_interaction": event.interaction_id,
                    "first_due_at": due.isoformat(),
                },
            )
        ],
        now,
    )
    return session.get(SopEnrollment, new_id)


def enroll_for_trigger(
    session: Session, settings: Settings, event: TriggerEvent, now: datetime, cards: Iterable[CurrentCard]
) -> list[SopEnrollment]:
    """Enroll the event's customer in every card it triggers whose audience they are in (in the
    caller's transaction). Needs an active follow relation (someone to remind)."""
    matching = [current for current in cards if event.fires(current.card)]
    if not matching:
        return []
    view = customer_view(session, event.external_userid, event.advisor_userid, settings)
    if not view.relation_active or not view.advisor_userid:
        return []
    enrolled = []
    for current in matching:
        if view.in_audience(current.card, stage=event.stage, band=event.band):
            row = _enroll_row(session, settings, current, view, event, now)
            if row is not None:
                enrolled.append(row)
    return enrolled


EnrollStatus = Literal["enrolled", "already_enrolled", "not_in_audience", "no_relation", "unknown_card"]


@dataclass(frozen=True)
class EnrollOutcome:
    status: EnrollStatus
    enrollment: SopEnrollment | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.enrollment is not None:
            e = self.enrollment
            due = e.next_due_at.isoformat() if e.next_due_at else "-"
            return (
                f"{self.status}: enrollment {e.id} ({e.card_id} for {e.external_userid}, advisor "
                f"{e.advisor_userid}, step {e.next_step + 1} due {due})"
            )
        return f"{self.status}: {self.detail}" if self.detail else self.status


def try_enroll(
    svc: Services,
    card_id: str,
    external_userid: str,
    trigger: TriggerEvent | str = "manual",
    now: datetime | None = None,
    *,
    advisor_userid: str | None = None,
) -> EnrollOutcome:
    """Enroll one customer in one card now, whatever the card's trigger (its audience still
    applies), in a transaction of its own; the outcome says what happened."""
    now = now or svc.clock.now()
    event = (
        TriggerEvent(kind=trigger, external_userid=external_userid, advisor_userid=advisor_userid)
        if isinstance(trigger, str)
        else trigger
    )
    with svc.sessions.begin() as session:
        current = next((c for c in current_cards(session) if c.card_id == card_id), None)
        if current is None:
            return EnrollOutcome("unknown_card", detail=f"no card {card_id!r} is loaded (scrm sop load)")
        existing = session.scalar(
            select(SopEnrollment).where(
                SopEnrollment.card_id == card_id, SopEnrollment.external_userid == external_userid
            )
        )
        if existing is not None:
            return EnrollOutcome("already_enrolled", existing)
        view = customer_view(session, external_userid, advisor_userid or event.advisor_userid, svc.settings)
        if not view.relation_active or not view.advisor_userid:
            who = f" with {advisor_userid}" if advisor_userid else ""
            return EnrollOutcome(
                "no_relation", detail=f"{external_userid} has no active follow relation{who}"
            )
        if not view.in_audience(current.card, stage=event.stage, band=event.band):
            return EnrollOutcome(
                "not_in_audience",
                detail=f"{external_userid} (stage {view.stage}, band {view.band}, model {view.model}, "
                f"dealer {view.dealer_code}, tags {sorted(view.tags)}) is not in {card_id}'s audience",
            )
        row = _enroll_row(session, svc.settings, current, view, event, now)
        if row is None:  # enrolled by someone else a moment ago
            return EnrollOutcome("already_enrolled", detail="enrolled concurrently")
        return EnrollOutcome("enrolled", row)


def enroll(
    svc: Services,
    card_id: str,
    external_userid: str,
    trigger: TriggerEvent | str = "manual",
    now: datetime | None = None,
) -> SopEnrollment | None:
    """Enroll one customer in one card now (e.g. ``manual``). The new enrollment, or None when
    the customer was enrolled in the card before, is not in its audience, has no active advisor,
    or the card is not loaded (``try_enroll`` says which)."""
    outcome = try_enroll(svc, card_id, external_userid, trigger, now)
    return outcome.enrollment if outcome.status == "enrolled" else None


# -- what others read --------------------------------------------------------------------------


def active_enrollments(
    session: Session, external_userid: str, advisor_userid: str | None = None
) -> list[tuple[SopEnrollment, Card]]:
    """The customer's active enrollments (with one advisor, or any), oldest first, each with its
    pinned, validated card."""
    stmt = select(SopEnrollment).where(
        SopEnrollment.external_userid == external_userid, SopEnrollment.status == EnrollmentStatus.ACTIVE
    )
    if advisor_userid:
        stmt = stmt.where(SopEnrollment.advisor_userid == advisor_userid)
    rows = session.scalars(stmt.order_by(SopEnrollment.enrolled_at, SopEnrollment.id)).all()
    return [(row, card_for_version(session, row.card_version_id)) for row in rows]


# -- exits and hand-overs -------------------------------------------------------------------------


def exit_enrollments(
    session: Session,
    external_userid: str,
    reason: str,
    now: datetime,
    *,
    advisor_userid: str | None = None,
    when: Callable[[SopEnrollment, Card], bool] = lambda enrollment, card: True,
    source_interaction: int | None = None,
) -> list[SopEnrollment]:
    """End the customer's active enrollments (with one advisor, or all) that ``when`` selects:
    status ``exited``, no next due time, ``sop_exited``. Returns those ended now."""
    ended = []
    for enrollment, card in active_enrollments(session, external_userid, advisor_userid):
        if not when(enrollment, card):
            continue
        result = session.execute(
            update(E)
            .where(E.c.id == enrollment.id, E.c.status == EnrollmentStatus.ACTIVE)
            .values(
                status=EnrollmentStatus.EXITED,
                exit_reason=reason[:64],
                next_due_at=None,
                lease_until=None,
                updated_at=now,
            )
        )
        if not result.rowcount:
            continue
        session.refresh(enrollment)
        interactions.append(session, [exited_interaction(enrollment, reason, now, source_interaction)], now)
        ended.append(enrollment)
    return ended


def exited_interaction(
    enrollment: SopEnrollment, reason: str, now: datetime, source_interaction: int | None = None
) -> NewInteraction:
    return NewInteraction(
        kind="sop_exited",
        occurred_at=now,
        dedup_key=f"sop:{enrollment.id}:exited",
        advisor_userid=enrollment.advisor_userid,
        external_userid=enrollment.external_userid,
        dealer_code=enrollment.dealer_code,
        payload={
            "card": enrollment.card_id,
            "enrollment": enrollment.id,
            "reason": reason,
            "at_step": enrollment.next_step,
            "source_interaction": source_interaction,
        },
    )


def move_enrollments(
    session: Session, external_userid: str, from_userid: str, to_userid: str, now: datetime
) -> int:
    """A hand-over completed: the customer's active enrollments with ``from_userid`` continue
    with ``to_userid`` (and that advisor's dealer). Returns how many moved."""
    dealer = session.scalar(select(Advisor.dealer_code).where(Advisor.userid == to_userid))
    values: dict[str, Any] = {"advisor_userid": to_userid, "updated_at": now}
    if dealer:
        values["dealer_code"] = dealer
    result = session.execute(
        update(E)
        .where(
            E.c.external_userid == external_userid,
            E.c.advisor_userid == from_userid,
            E.c.status == EnrollmentStatus.ACTIVE,
        )
        .values(**values)
    )
    return result.rowcount or 0

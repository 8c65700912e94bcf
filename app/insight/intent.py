"""Lead intent score (线索浓度矩阵).

Each configured interaction kind has a weight and a frequency cap (``INTENT_WEIGHTS``)::

    raw   = Σ weight(kind) × min(count(kind), cap(kind))
    score = min(100, 100 × raw / INTENT_FULL_SCORE)        rounded to 0.1
    band  = low < INTENT_BANDS[0] ≤ medium < INTENT_BANDS[1] ≤ high

Counts come from the interaction log (one grouped query per customer), so a score can always be
rebuilt from the log. ``customer_intent`` keeps the last result, and the customer's
``profile["intent"]`` and ``profile["intent_band"]`` (what matching and SOP audiences read) follow it.

``record_action`` is the way in: it appends the action to the log and recomputes; when the band
changes it also appends ``intent_changed`` {"score", "band", "previous_band"} — the trigger SOP
enrollment listens for. Actions for one customer are serialised (an advisory lock on PostgreSQL;
SQLite has one writer), so concurrent actions never lose a count or report a change twice.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, String, cast, func, select, text, update
from sqlalchemy.orm import Session

from app.store import interactions
from app.store.db import insert_for
from app.store.insight_models import CustomerIntent
from app.store.models import Customer, Interaction

if TYPE_CHECKING:
    from app.config import Settings

LOW, MEDIUM, HIGH = "low", "medium", "high"
BANDS = (LOW, MEDIUM, HIGH)
INTENT_CHANGED = "intent_changed"
# Kinds that can never carry a weight: the score's own output would feed itself.
RESERVED_KINDS = frozenset({INTENT_CHANGED})
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_LOCK_CLASS = 0x1E7E  # first key of the PostgreSQL advisory lock (second: hash of the customer)
_MAX_KEY = 191  # interactions.dedup_key


@dataclass(frozen=True)
class Weight:
    weight: float
    cap: int


@dataclass(frozen=True)
class IntentState:
    """A customer's score as just computed; ``previous_*`` are what was stored before (a customer
    never scored before counts as 0, low)."""

    external_userid: str
    score: float
    band: str
    counts: dict[str, int]
    previous_score: float
    previous_band: str

    @property
    def band_changed(self) -> bool:
        return self.band != self.previous_band

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "band": self.band, "counts": self.counts}


@dataclass(frozen=True)
class IntentChange:
    """A band change, as written to the log in the ``intent_changed`` interaction."""

    external_userid: str
    score: float
    band: str
    previous_band: str
    previous_score: float


# -- configuration --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def parse_weights(spec: str) -> Mapping[str, Weight]:
    """``"link_opened=10:5,favourite=20:1"`` → {kind: Weight}. ValueError says what is wrong."""
    weights: dict[str, Weight] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        kind, eq, rest = item.partition("=")
        kind = kind.strip()
        weight_text, colon, cap_text = rest.partition(":")
        if not eq or not colon:
            raise ValueError(f"{item!r} is not kind=weight:cap (e.g. link_opened=10:5)")
        if not _KIND.fullmatch(kind):
            raise ValueError(f"{kind!r} is not an interaction kind (a-z, 0-9, _; at most 32 characters)")
        if kind in RESERVED_KINDS:
            raise ValueError(f"{kind} cannot be weighted: the score writes it")
        if kind in weights:
            raise ValueError(f"{kind} is listed twice")
        try:
            weight = float(weight_text)
        except ValueError:
            raise ValueError(f"{kind}: the weight {weight_text.strip()!r} is not a number") from None
        if not weight >= 0 or weight == float("inf"):  # also rejects nan
            raise ValueError(f"{kind}: the weight must be a number 0 or more, not {weight_text.strip()}")
        if not cap_text.strip().isdigit() or int(cap_text) < 1:
            raise ValueError(f"{kind}: the cap must be a whole number 1 or more, not {cap_text.strip()!r}")
        weights[kind] = Weight(weight, int(cap_text))
    if not weights:
        raise ValueError("list at least one kind=weight:cap, e.g. link_opened=10:5")
    return MappingProxyType(weights)  # cached: read-only


@functools.lru_cache(maxsize=16)
def parse_bands(spec: str) -> tuple[float, float]:
    """``"40,70"`` → (40.0, 70.0): low below the first, high from the second."""
    parts = [part.strip() for part in spec.split(",")]
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise ValueError(f"{spec!r} is not two scores 'medium from,high from', e.g. 40,70") from None
    if not 0 < low < high <= 100:
        raise ValueError(f"{spec!r}: need 0 < medium from < high from ≤ 100, e.g. 40,70")
    return low, high


def check_full_score(value: float) -> None:
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a number above 0 (the raw points that make 100), not {value}")


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from app.services import services

    return services().settings


# -- the arithmetic ------------------------------------------------------------------------------


def score_of(counts: dict[str, int], settings: Settings) -> float:
    """100 × Σ weight × min(count, cap) / INTENT_FULL_SCORE, at most 100, rounded to 0.1."""
    raw = sum(w.weight * min(counts.get(kind, 0), w.cap) for kind, w in settings.intent_weights.items())
    return round(min(100.0, 100.0 * raw / settings.INTENT_FULL_SCORE), 1)


def band_of(score: float, settings: Settings) -> str:
    medium_from, high_from = settings.intent_bands
    if score >= high_from:
        return HIGH
    return MEDIUM if score >= medium_from else LOW


def counts_of(session: Session, external_userid: str, settings: Settings) -> dict[str, int]:
    """Per-kind counts of the customer's weighted interactions (one grouped query)."""
    rows = session.execute(
        select(Interaction.kind, func.count())
        .where(
            Interaction.external_userid == external_userid,
            Interaction.kind.in_(list(settings.intent_weights)),
        )
        .group_by(Interaction.kind)
    )
    return {kind: int(n) for kind, n in rows}


def compute(session: Session, external_userid: str, settings: Settings | None = None) -> IntentState:
    """The score from the log as it is now, without writing anything."""
    settings = _settings(settings)
    counts = counts_of(session, external_userid, settings)
    score = score_of(counts, settings)
    stored = session.get(CustomerIntent, external_userid)
    previous_score = stored.score if stored else 0.0
    previous_band = stored.band if stored else band_of(0.0, settings)
    return IntentState(
        external_userid, score, band_of(score, settings), counts, previous_score, previous_band
    )


def current(session: Session, external_userid: str) -> CustomerIntent | None:
    """The stored score (what the last recompute found), or None if never scored."""
    return session.get(CustomerIntent, external_userid)


# -- writing ----------------------------------------------------------------------------------------



def lock_customer(session: Session, external_userid: str) -> None:
    """Serialise score updates of one customer until the transaction ends. On SQLite the first
    write takes the database's single write lock, which does the same."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:cls, hashtext(:who))"),
            {"cls": _LOCK_CLASS, "who": external_userid},
        )


def recompute(
    session: Session, external_userid: str, now: datetime, settings: Settings | None = None
) -> IntentState:
    """Rebuild the customer's score from the log, store it in ``customer_intent`` and in the
    customer's ``profile["intent"]``/``["intent_band"]`` (when the customer row exists). No interaction: a
    band change is reported in the result (``band_changed``) for the caller to act on."""
    settings = _settings(settings)
    state = compute(session, external_userid, settings)
    stored = session.get(CustomerIntent, external_userid)  # loaded by compute: no query
    values = {"score": state.score, "band": state.band, "counts": state.counts, "updated_at": now}
    changed_at = {"band_changed_at": now} if state.band_changed else {}
    stmt = insert_for(session)(CustomerIntent).values(external_userid=external_userid, **values, **changed_at)
    session.execute(
        stmt.on_conflict_do_update(index_elements=["external_userid"], set_={**values, **changed_at})
    )
    if stored is not None:
        session.expire(stored)  # the upsert went around the ORM
    _set_profile_intent(session, external_userid, state, now)
    return state


def _set_profile_intent(session: Session, external_userid: str, state: IntentState, now: datetime) -> None:
    """``profile["intent"] = score`` and ``profile["intent_band"] = band`` as one statement on the
    JSON document, so a concurrent update of other profile keys (a contact event) is not lost."""
    if session.get_bind().dialect.name == "postgresql":
        value = func.coalesce(Customer.profile, text("'{}'::jsonb")).op("||")(
            func.jsonb_build_object(
                "intent", cast(state.score, Float), "intent_band", cast(state.band, String)
            )
        )
    else:
        value = func.json_set(
            func.coalesce(Customer.profile, "{}"), "$.intent", state.score, "$.intent_band", state.band
        )
    session.execute(
        update(Customer)
        .where(Customer.external_userid == external_userid)
        .values(profile=value, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )


def record_action(
    session: Session,
    *,
    external_userid: str,
    kind: str,
    advisor: str | None = None,
    dealer: str | None = None,
    payload: dict[str, Any] | None = None,
    dedup_key: str,
    now: datetime,
    occurred_at: datetime | None = None,
    settings: Settings | None = None,
) -> IntentChange | None:
    """Append the action (``kind``) to the log and recompute the customer's score. Returns the
    band change (also written as an ``intent_changed`` interaction, keyed by the action's key), or
    None when the band stayed or the action was already recorded (same ``dedup_key``: a replay
    changes nothing). A kind without a weight is recorded but does not move the score."""
    settings = _settings(settings)
    occurred = occurred_at or now
    lock_customer(session, external_userid)
    new = interactions.append(
        session,
        [
            interactions.NewInteraction(
                kind=kind,
                occurred_at=occurred,
                dedup_key=dedup_key,
                advisor_userid=advisor,
                external_userid=external_userid,
                dealer_code=dealer,
                payload=dict(payload or {}),
            )
        ],
        now,
    )
    if not new or kind not in settings.intent_weights:
        return None
    state = recompute(session, external_userid, now, settings)
    if not state.band_changed:
        return None
    change = IntentChange(external_userid, state.score, state.band, state.previous_band, state.previous_score)
    interactions.append(
        session,
        [
            interactions.NewInteraction(
                kind=INTENT_CHANGED,
                occurred_at=occurred,
                dedup_key=_derived_key(INTENT_CHANGED, dedup_key),
                advisor_userid=advisor,
                external_userid=external_userid,
                dealer_code=dealer,
                payload={
                    "score": state.score,
                    "band": state.band,
                    "previous_band": state.previous_band,
                    "previous_score": state.previous_score,
                    "cause": kind,
                },
            )
        ],
        now,
    )
    return change


def _derived_key(prefix: str, key: str) -> str:
    derived = f"{prefix}:{key}"
    if len(derived) <= _MAX_KEY:
        return derived
    return f"{prefix}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"

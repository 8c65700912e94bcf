"""The matching engine: which advisor gets a customer, and why. Pure: no I/O, no clock.

The caller hands over the roster (dealers, advisors' tag profiles), the customer's tag profile
and the advisors' current load; the engine returns the chosen advisor, the runners-up and a
score breakdown that is stored with the assignment and shown to the advisor and to HQ.

1. Territory: the customer's dealer (or the dealers that cover the customer's city). When none of
   them sells the customer's model, the lead goes to the nearest dealer that does (re-routed).
2. Hard filters: active, and capacity left today and in open leads.
3. Score: tag overlap (model, language, segment, persona; seniority for high intent) with
   configurable weights, spare capacity, and record (acceptance rate, first-response time).
4. Ties: fewer assignments today first, then the userid (deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

HIGH_INTENT = 70.0  # intent score (0-100) from which seniority counts
_NEUTRAL = 0.5  # record of an advisor with no history yet: neither rewarded nor punished
_RESPONSE_HALF_SCORE_SECONDS = 600.0  # a 10-minute median first response scores 0.5


@dataclass(frozen=True)
class Dealer:
    code: str
    name: str
    region: str
    city: str
    lat: float
    lon: float
    models: frozenset[str]
    territory: frozenset[str] = frozenset()  # extra cities this dealer serves besides its own


@dataclass(frozen=True)
class Advisor:
    userid: str
    dealer_code: str
    active: bool = True
    capacity_per_day: int = 20
    max_open_leads: int = 200
    models: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()  # prospect, intent, lost, owner
    personas: frozenset[str] = frozenset()  # rational, emotional
    seniority: int = 0  # 0 junior … 3 senior
    acceptance_rate: float | None = None  # share of assigned customers the advisor engaged
    median_first_response_s: float | None = None


@dataclass(frozen=True)
class Load:
    """An advisor's load now (from the store): assignments today and leads still open."""

    assigned_today: int = 0
    open_leads: int = 0


@dataclass(frozen=True)
class Customer:
    dealer_code: str | None = None
    city: str | None = None
    model: str | None = None
    languages: frozenset[str] = frozenset()
    segment: str | None = None
    persona: str | None = None
    intent: float | None = None


@dataclass(frozen=True)
class Weights:
    """Points per component. spare_capacity trades expertise for balance; on bench/matching.py
    (20,000 advisors, 100,000 leads) weight 2 gives load max/mean 7.0 with 99.9 % model experts,
    12 gives 4.2 (round-robin's figure) with 98.5 %, 40 gives 3.2 with 94.6 %."""

    model: float = 3.0
    language: float = 1.0
    segment: float = 1.5
    persona: float = 1.0
    seniority: float = 1.0
    spare_capacity: float = 12.0
    acceptance: float = 1.0
    response: float = 1.0


@dataclass(frozen=True)
class Scored:
    userid: str
    dealer_code: str
    total: float
    breakdown: dict[str, float]  # component → weighted points; they add up to ``total``


@dataclass(frozen=True)
class Match:
    chosen: Scored | None
    runners_up: list[Scored]
    dealer_codes: tuple[str, ...]  # the territory that was searched
    rerouted: bool
    reason: str
    excluded: dict[str, str] = field(default_factory=dict)  # userid → why it was filtered out

    def explain(self) -> dict[str, object]:
        """What is stored with the assignment and shown to the advisor and HQ."""
        return {
            "chosen": None if self.chosen is None else _scored_json(self.chosen),
            "runners_up": [_scored_json(s) for s in self.runners_up],
            "territory": list(self.dealer_codes),
            "rerouted": self.rerouted,
            "reason": self.reason,
            "excluded": self.excluded,
        }


def _scored_json(scored: Scored) -> dict[str, object]:
    return {
        "advisor": scored.userid,
        "dealer": scored.dealer_code,
        "score": round(scored.total, 4),
        "breakdown": {k: round(v, 4) for k, v in scored.breakdown.items()},
    }


class Roster:
    """Dealers and advisors, indexed once; ``match`` is then cheap (one territory at a time)."""

    def __init__(
        self, dealers: Iterable[Dealer], advisors: Iterable[Advisor], weights: Weights | None = None
    ):
        self.weights = weights or Weights()
        self.dealers = {dealer.code: dealer for dealer in dealers}
        self.advisors_by_dealer: dict[str, list[Advisor]] = {code: [] for code in self.dealers}
        for advisor in advisors:
            if advisor.dealer_code in self.advisors_by_dealer:
                self.advisors_by_dealer[advisor.dealer_code].append(advisor)
        self._by_city: dict[str, list[Dealer]] = {}
        for dealer in self.dealers.values():
            for city in {dealer.city, *dealer.territory}:
                self._by_city.setdefault(city, []).append(dealer)
        self._by_model: dict[str, list[Dealer]] = {}
        for dealer in self.dealers.values():
            for model in dealer.models:
                self._by_model.setdefault(model, []).append(dealer)

    def match(
        self,
        customer: Customer,
        loads: Mapping[str, Load],
        runners_up: int = 3,
        exclude: Mapping[str, str] | None = None,
    ) -> Match:
        """``exclude``: advisors ruled out by the caller, with the reason (e.g. a transfer to
        them failed); they are reported in ``excluded`` like the engine's own filters."""
        territory, rerouted, reason = self._territory(customer)
        if not territory:
            return Match(None, [], (), False, reason)
        excluded: dict[str, str] = {}
        scored: list[tuple[float, int, str, Scored]] = []
        for dealer in territory:
            for advisor in self.advisors_by_dealer[dealer.code]:
                load = loads.get(advisor.userid, _NO_LOAD)
                why_not = (exclude or {}).get(advisor.userid) or _filtered_out(advisor, load)
                if why_not:
                    excluded[advisor.userid] = why_not
                    continue
                result = self._score(advisor, load, customer)
                # Ranked by the score as explained (_scored_json, Decision.score: 4 places), so
                # totals that differ only by float rounding tie and the tie-break decides.
                scored.append((-round(result.total, 4), load.assigned_today, advisor.userid, result))
        codes = tuple(dealer.code for dealer in territory)
        if not scored:
            return Match(None, [], codes, rerouted, "no eligible advisor in the territory", excluded)
        scored.sort(key=lambda item: item[:3])
        ranked = [item[3] for item in scored]
        return Match(ranked[0], ranked[1 : 1 + runners_up], codes, rerouted, reason, excluded)

    def candidates(self, customer: Customer) -> list[str]:
        """The advisors ``match`` would consider for this customer: the caller fetches only
        their load."""
        territory, _, _ = self._territory(customer)
        return [advisor.userid for dealer in territory for advisor in self.advisors_by_dealer[dealer.code]]

    # -- territory ---------------------------------------------------------------------------

    def _territory(self, customer: Customer) -> tuple[list[Dealer], bool, str]:
        home = self._home_dealers(customer)
        if not home:
            return [], False, "unknown dealer and city: no territory to search"
        if customer.model is None or any(customer.model in d.models for d in home):
            sellers = [d for d in home if customer.model is None or customer.model in d.models]
            return sorted(sellers, key=lambda d: d.code), False, "the customer's own territory"
        candidates = self._by_model.get(customer.model, [])
        if not candidates:
            return [], False, f"no dealer sells {customer.model}"
        origin = home[0]
        nearest = min(candidates, key=lambda d: (_distance_km(origin, d), d.code))
        return [nearest], True, f"re-routed: {origin.code} does not sell {customer.model}; nearest that does"

    def _home_dealers(self, customer: Customer) -> list[Dealer]:
        if customer.dealer_code and customer.dealer_code in self.dealers:
            return [self.dealers[customer.dealer_code]]
        if customer.city:
            return sorted(self._by_city.get(customer.city, []), key=lambda d: d.code)
        return []

    # -- score -------------------------------------------------------------------------------

    def _score(self, advisor: Advisor, load: Load, customer: Customer) -> Scored:
        w = self.weights
        parts: dict[str, float] = {}
        if customer.model is not None:
            parts["model"] = w.model * (customer.model in advisor.models)
        if customer.languages:
            parts["language"] = w.language * bool(customer.languages & advisor.languages)
        if customer.segment is not None:
            parts["segment"] = w.segment * (customer.segment in advisor.segments)
        if customer.persona is not None:
            parts["persona"] = w.persona * (customer.persona in advisor.personas)
        if customer.intent is not None and customer.intent >= HIGH_INTENT:
            parts["seniority"] = w.seniority * min(max(advisor.seniority, 0), 3) / 3
        parts["spare_capacity"] = w.spare_capacity * (1 - load.assigned_today / advisor.capacity_per_day)
        acceptance = (
            _NEUTRAL if advisor.acceptance_rate is None else min(max(advisor.acceptance_rate, 0.0), 1.0)
        )
        parts["acceptance"] = w.acceptance * acceptance
        if advisor.median_first_response_s is None:
            response = _NEUTRAL
        else:
            response = 1 / (1 + max(advisor.median_first_response_s, 0.0) / _RESPONSE_HALF_SCORE_SECONDS)
        parts["response"] = w.response * response
        return Scored(advisor.userid, advisor.dealer_code, sum(parts.values()), parts)


_NO_LOAD = Load()


def _filtered_out(advisor: Advisor, load: Load) -> str | None:
    if not advisor.active:
        return "inactive"
    if load.assigned_today >= advisor.capacity_per_day:
        return "daily capacity used up"
    if load.open_leads >= advisor.max_open_leads:
        return "too many open leads"
    return None


def _distance_km(a: Dealer, b: Dealer) -> float:
    """Great-circle distance (haversine): dealers' coordinates are in the roster."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))

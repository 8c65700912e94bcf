"""The customer tag profile: what matching scores against and what the sidebar shows.

Sources, later ones filling what earlier ones left open: the contact-way state (channel, dealer,
model, campaign), the lead (model, city, dealer, intent, budget), the receiving advisor's dealer,
and the corp tags on the follow relation, read by tag group:

    意向车型  model of interest        客户阶段  潜客 / 意向 / 战败 / 车主 (segment)
    客户性格  理性 / 感性 (persona)     沟通语言  languages and dialects
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.intake import matching
from app.intake.state import State
from app.store.models import Lead

SEGMENTS = {"潜客": "prospect", "意向": "intent", "战败": "lost", "车主": "owner"}
PERSONAS = {"理性": "rational", "感性": "emotional"}
GROUP_MODEL, GROUP_SEGMENT, GROUP_PERSONA, GROUP_LANGUAGE = "意向车型", "客户阶段", "客户性格", "沟通语言"


def from_tags(tags: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """What the corp tags on a relation say: model, segment, persona, languages (when tagged)."""
    by_group: dict[str, list[str]] = {}
    for group, name in tags:
        by_group.setdefault(group, []).append(name)
    found: dict[str, Any] = {
        "model": (by_group.get(GROUP_MODEL) or [None])[0],
        "segment": next((SEGMENTS[n] for n in by_group.get(GROUP_SEGMENT, []) if n in SEGMENTS), None),
        "persona": next((PERSONAS[n] for n in by_group.get(GROUP_PERSONA, []) if n in PERSONAS), None),
        "languages": sorted(set(by_group.get(GROUP_LANGUAGE, []))),
    }
    return {key: value for key, value in found.items() if value not in (None, [])}


def build(
    state: State,
    lead: Lead | None = None,
    advisor_dealer: str | None = None,
    tags: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """A JSON-ready profile; ``tags`` are (group name, tag name) pairs on the relation."""
    tagged = from_tags(tags)
    profile: dict[str, Any] = {
        "channel": state.channel,
        "campaign": state.campaign or (lead.campaign if lead else None),
        "dealer": state.dealer or (lead.dealer_code if lead else None) or advisor_dealer,
        "model": state.model or (lead.model if lead else None) or tagged.get("model"),
        "city": lead.city if lead else None,
        "intent": lead.intent if lead else None,
        "budget": lead.budget if lead else None,
        "segment": tagged.get("segment") or "prospect",
        "persona": tagged.get("persona"),
        "languages": tagged.get("languages"),
        "lead_id": lead.id if lead else None,
    }
    return {key: value for key, value in profile.items() if value not in (None, [], "")}


def to_customer(profile: dict[str, Any]) -> matching.Customer:
    """The engine's view of a profile."""
    return matching.Customer(
        dealer_code=profile.get("dealer"),
        city=profile.get("city"),
        model=profile.get("model"),
        languages=frozenset(profile.get("languages") or ()),
        segment=profile.get("segment"),
        persona=profile.get("persona"),
        intent=profile.get("intent"),
    )

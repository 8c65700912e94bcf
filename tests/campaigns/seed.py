"""A seeded store for audience tests: dealers in two regions, advisors (one inactive), corp tags,
customers with stages, intent and models, and follow relations (active, lost, two per customer)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.campaigns.audience import Facts
from app.store.models import Advisor, CorpTag, Customer, Dealer, FollowRelation

NOW = datetime(2026, 10, 15, 4, 0, tzinfo=UTC)
DEALERS = {"SH01": "east", "HZ01": "east", "BJ01": "north"}
ADVISORS = {"sh_a1": "SH01", "sh_a2": "SH01", "hz_a1": "HZ01", "bj_a1": "BJ01", "sh_gone": "SH01"}
INACTIVE = {"sh_gone"}
TAGS = {  # tag_id: (group, name, deleted)
    "t_rav4": ("意向车型", "RAV4", False),
    "t_bz4x": ("意向车型", "BZ4X", False),
    "t_event": ("活动", "试驾专场", False),
    "t_rav4_old": ("意向车型", "RAV4", True),  # an older, deleted tag of the same name
    "t_vip": ("客户等级", "VIP", False),
}


def seed_roster(session: Session) -> None:
    session.execute(
        insert(Dealer),
        [
            dict(code=code, name=code, region=region, city="x", lat=0.0, lon=0.0, models=[], territory=[],
                 updated_at=NOW)
            for code, region in DEALERS.items()
        ],
    )  # fmt: skip
    session.execute(
        insert(Advisor),
        [
            dict(userid=userid, name=userid, dealer_code=dealer, active=userid not in INACTIVE,
                 capacity_per_day=20, max_open_leads=200, models=[], languages=[], segments=[],
                 personas=[], updated_at=NOW)
            for userid, dealer in ADVISORS.items()
        ],
    )  # fmt: skip
    session.execute(
        insert(CorpTag),
        [
            dict(tag_id=tag_id, group_id="g_" + group, group_name=group, name=name, deleted=deleted,
                 synced_at=NOW)
            for tag_id, (group, name, deleted) in TAGS.items()
        ],
    )  # fmt: skip


def add(
    session: Session,
    ext: str,
    advisor: str,
    *,
    tags: list[str] = (),
    profile: dict | None = None,
    status: str = "active",
    added_days_ago: float = 1,
    dealer: str | None = "advisor",
) -> None:
    if session.get(Customer, ext) is None:
        session.add(Customer(external_userid=ext, profile=profile or {}, created_at=NOW, updated_at=NOW))
        session.flush()
    session.add(
        FollowRelation(
            advisor_userid=advisor,
            external_userid=ext,
            dealer_code=ADVISORS[advisor] if dealer == "advisor" else dealer,
            status=status,
            tag_ids=list(tags),
            added_at=NOW - timedelta(days=added_days_ago),
        )
    )
    session.flush()


def seed_random(session: Session, customers: int, seed: int = 5) -> list[tuple[dict, Facts, str, str]]:
    """Random customers and relations; returns (relation, facts, status, advisor active) per relation
    so tests can compute the expected audience in Python."""
    rng = random.Random(seed)
    out = []
    tag_names = {tag_id: f"{g}:{n}" for tag_id, (g, n, _) in TAGS.items()}
    stages = ["prospect", "intent", "lost", "owner", None]
    for i in range(customers):
        ext = f"wm{i:05d}"
        profile: dict = {}
        if (stage := rng.choice(stages)) is not None:
            profile["segment"] = stage
        if rng.random() < 0.7:
            profile["model"] = rng.choice(["RAV4", "BZ4X", "corolla"])
        r = rng.random()
        if r < 0.3:
            profile["intent_band"] = rng.choice(["low", "medium", "high"])
        elif r < 0.6:
            profile["intent"] = rng.choice([5, 39.9, 40, 55.5, 70, 99])
        session.add(Customer(external_userid=ext, profile=profile, created_at=NOW, updated_at=NOW))
        for advisor in rng.sample(sorted(ADVISORS), rng.choice([1, 1, 1, 2, 3])):
            tags = rng.sample(sorted(TAGS), rng.choice([0, 1, 1, 2, 3]))
            status = "active" if rng.random() < 0.85 else "lost"
            dealer = ADVISORS[advisor] if rng.random() < 0.9 else None
            added = NOW - timedelta(days=rng.randrange(0, 60), minutes=rng.randrange(0, 1440))
            relation = dict(
                advisor_userid=advisor, external_userid=ext, dealer_code=dealer, status=status,
                tag_ids=tags, added_at=added,
            )  # fmt: skip
            session.add(FollowRelation(**relation))
            band = profile.get("intent_band")
            if band is None and "intent" in profile:
                score = profile["intent"]
                band = "high" if score >= 70 else "medium" if score >= 40 else "low"
            eff_dealer = dealer or ADVISORS[advisor]
            facts = Facts(
                tags=frozenset(tag_names[t] for t in tags),
                stage=profile.get("segment"),
                band=band,
                model=profile.get("model"),
                dealer=eff_dealer,
                region=DEALERS[eff_dealer],
                added_at=added,
            )
            out.append((relation, facts, status, advisor not in INACTIVE))
    session.flush()
    return out


def expected(relations, flt, scope: str | None) -> dict[str, tuple[str, str]]:
    """The audience computed in Python: {customer: (advisor, dealer)} by the documented rules."""
    best: dict[str, tuple[datetime, dict, Facts]] = {}
    for relation, facts, status, active in relations:
        if status != "active" or not active or (scope and facts.dealer != scope):
            continue
        if not flt.matches(facts):
            continue
        ext = relation["external_userid"]
        if ext not in best or relation["added_at"] > best[ext][0]:
            best[ext] = (relation["added_at"], relation, facts)
    return {ext: (rel["advisor_userid"], facts.dealer) for ext, (_, rel, facts) in best.items()}

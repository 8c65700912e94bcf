"""Matching benchmark: 20,000 advisors in 500 dealers, 100,000 leads, assigned one by one with the
load updated after each, by the matching engine and by a plain round-robin within the lead's
dealer (the baseline, in the same run). Prints p50/p99 time per assignment, the spread of load
across advisors (max/mean of assignments per active advisor) and how often the advisor sells the
lead's model best.

    python bench/matching.py [--advisors 20000 --dealers 500 --leads 100000 --seed 7]
                             [--store 2000 --database-url postgresql+psycopg://…]

Target: p99 < 5 ms per assignment.

``--store N`` also times N assignments the way a worker makes them (app/intake/assign.py: the
roster from the store, today's load queried per territory, the decision written to the effects
ledger, the assignment row), on a fresh SQLite file or the given database.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.intake.matching import Advisor, Customer, Dealer, Load, Roster

MODELS = ["RAV4", "COROLLA", "CAMRY", "AVALON", "BZ4X", "HIGHLANDER", "SIENNA", "CROWN"]
SEGMENTS = ["prospect", "intent", "lost", "owner"]
LANGUAGES = ["zh", "yue", "wuu", "en"]


def build_world(dealer_count: int, advisor_count: int, lead_count: int, seed: int):
    rnd = random.Random(seed)
    cities = [
        (f"city{i:02d}", rnd.uniform(22, 42), rnd.uniform(102, 122))
        for i in range(max(1, dealer_count // 10))
    ]
    dealers = []
    for i in range(dealer_count):
        city, lat, lon = rnd.choice(cities)
        models = frozenset(rnd.sample(MODELS, rnd.randint(3, 5)))
        dealers.append(
            Dealer(f"D{i:04d}", f"dealer {i}", "r", city, lat + rnd.uniform(-0.2, 0.2), lon, models)
        )
    advisors = []
    for j in range(advisor_count):
        dealer = dealers[j % dealer_count]
        advisors.append(
            Advisor(
                userid=f"adv{j:05d}",
                dealer_code=dealer.code,
                active=rnd.random() > 0.05,
                capacity_per_day=rnd.randint(20, 40),
                max_open_leads=500,
                models=frozenset(rnd.sample(sorted(dealer.models), rnd.randint(1, 2))),
                languages=frozenset({"zh", *rnd.sample(LANGUAGES, 1)}),
                segments=frozenset(rnd.sample(SEGMENTS, 2)),
                personas=frozenset(rnd.sample(["rational", "emotional"], 1)),
                seniority=rnd.randint(0, 3),
                acceptance_rate=rnd.uniform(0.4, 0.95),
                median_first_response_s=rnd.uniform(30, 3600),
            )
        )
    leads = []
    for _ in range(lead_count):
        dealer = rnd.choice(dealers)
        by_city = rnd.random() < 0.2
        leads.append(
            Customer(
                dealer_code=None if by_city else dealer.code,
                city=dealer.city if by_city else None,
                model=rnd.choice(MODELS),  # sometimes a model the dealer does not sell: re-routed
                languages=frozenset({rnd.choice(LANGUAGES)}),
                segment=rnd.choice(SEGMENTS),
                persona=rnd.choice(["rational", "emotional"]),
                intent=rnd.uniform(0, 100),
            )
        )
    return dealers, advisors, leads


def run_engine(roster: Roster, leads: list[Customer]) -> tuple[list[float], dict[str, int], int]:
    loads: dict[str, Load] = {}
    timings, counts, experts = [], {}, 0
    models = {a.userid: a.models for advisors in roster.advisors_by_dealer.values() for a in advisors}
    for lead in leads:
        start = time.perf_counter()
        match = roster.match(lead, loads)
        timings.append(time.perf_counter() - start)
        if match.chosen is None:
            continue
        userid = match.chosen.userid
        load = loads.get(userid, Load())
        loads[userid] = Load(load.assigned_today + 1, load.open_leads + 1)
        counts[userid] = counts.get(userid, 0) + 1
        experts += lead.model in models[userid]
    return timings, counts, experts


def run_round_robin(roster: Roster, leads: list[Customer]) -> tuple[list[float], dict[str, int], int]:
    """Each dealer hands leads to its active advisors in turn (skipping full ones)."""
    cursor: dict[str, int] = {}
    timings, counts, experts = [], {}, 0
    by_city = {}
    for dealer in sorted(roster.dealers.values(), key=lambda d: d.code):
        by_city.setdefault(dealer.city, dealer.code)
    for lead in leads:
        start = time.perf_counter()
        code = lead.dealer_code or by_city.get(lead.city or "")
        team = roster.advisors_by_dealer.get(code or "", [])
        chosen = None
        for step in range(len(team)):
            candidate = team[(cursor.get(code, 0) + step) % len(team)]
            if candidate.active and counts.get(candidate.userid, 0) < candidate.capacity_per_day:
                chosen = candidate
                cursor[code] = (cursor.get(code, 0) + step + 1) % len(team)
                break
        timings.append(time.perf_counter() - start)
        if chosen is not None:
            counts[chosen.userid] = counts.get(chosen.userid, 0) + 1
            experts += lead.model in chosen.models
    return timings, counts, experts


def summary(
    name: str, timings: list[float], counts: dict[str, int], experts: int, active: int, leads: int
) -> dict:
    ordered = sorted(timings)
    assigned = sum(counts.values())
    mean = assigned / active
    return {
        "name": name,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "assigned": assigned,
        "unassigned": leads - assigned,
        "spread": max(counts.values()) / mean if counts else 0.0,
        "model_expert_share": experts / assigned if assigned else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--advisors", type=int, default=20_000)
    parser.add_argument("--dealers", type=int, default=500)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--store", type=int, default=0, help="also time N assignments through the store")
    parser.add_argument("--database-url", default="", help="with --store: this database (default SQLite)")
    args = parser.parse_args()

    dealers, advisors, leads = build_world(args.dealers, args.advisors, args.leads, args.seed)
    roster = Roster(dealers, advisors)
    active = sum(a.active for a in advisors)
    results = [
        summary("engine", *run_engine(roster, leads), active, len(leads)),
        summary("round-robin", *run_round_robin(roster, leads), active, len(leads)),
    ]
    print(f"\n{args.advisors} advisors in {args.dealers} dealers, {args.leads} leads (seed {args.seed})")
    head = f"{'method':<13}{'p50 ms':>9}{'p99 ms':>9}{'assigned':>10}{'unassigned':>12}"
    print(head + f"{'max/mean':>10}{'expert %':>10}")
    for r in results:
        print(
            f"{r['name']:<13}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['assigned']:>10}{r['unassigned']:>12}"
            f"{r['spread']:>10.2f}{r['model_expert_share'] * 100:>9.1f}%"
        )
    engine, baseline = results
    print(f"engine p99 {engine['p99_ms']:.2f} ms (target < 5), round-robin p99 {baseline['p99_ms']:.3f} ms")
    print(f"load spread max/mean: engine {engine['spread']:.2f}, round-robin {baseline['spread']:.2f}")
    print(
        f"advisor sells the lead's model best: engine {engine['model_expert_share']:.0%}, "
        f"round-robin {baseline['model_expert_share']:.0%}"
    )
    ok = engine["p99_ms"] < 5
    if args.store:
        stored = run_store(dealers, advisors, leads[: args.store], args.database_url)
        print(
            f"through the store ({stored['backend']}, {args.store} leads): p50 {stored['p50_ms']:.2f} ms, "
            f"p99 {stored['p99_ms']:.2f} ms per assignment (decide + record; roster loaded once: "
            f"{stored['roster_load_s']:.2f} s)"
        )
    return 0 if ok else 1


def run_store(dealers, advisors, leads, database_url: str) -> dict:
    """Assignments through app/intake/assign.py on a real database."""
    import tempfile
    from datetime import UTC, datetime

    from sqlalchemy import insert
    from sqlalchemy.engine import make_url

    from app import create_app
    from app.intake import assign
    from app.store.models import Advisor as AdvisorRow
    from app.store.models import Dealer as DealerRow

    workdir = tempfile.mkdtemp(prefix="scrm-bench-matching-")
    url = database_url or f"sqlite:///{workdir}/bench.db"
    app = create_app({"SCRM_MODE": "demo", "DATABASE_URL": url, "INSTANCE_PATH": workdir})
    svc = app.extensions["scrm"]
    now = datetime.now(UTC)
    with svc.sessions.begin() as session:
        session.execute(
            insert(DealerRow),
            [
                dict(
                    code=d.code,
                    name=d.name,
                    region=d.region,
                    city=d.city,
                    lat=d.lat,
                    lon=d.lon,
                    models=sorted(d.models),
                    territory=sorted(d.territory),
                    updated_at=now,
                )
                for d in dealers
            ],
        )
        session.execute(
            insert(AdvisorRow),
            [
                dict(
                    userid=a.userid,
                    name=a.userid,
                    dealer_code=a.dealer_code,
                    active=a.active,
                    capacity_per_day=a.capacity_per_day,
                    max_open_leads=a.max_open_leads,
                    models=sorted(a.models),
                    languages=sorted(a.languages),
                    segments=sorted(a.segments),
                    personas=sorted(a.personas),
                    seniority=a.seniority,
                    acceptance_rate=a.acceptance_rate,
                    median_first_response_s=a.median_first_response_s,
                    updated_at=now,
                )
                for a in advisors
            ],
        )
    start = time.perf_counter()
    assign.roster_cache(svc).get(svc)
    roster_load = time.perf_counter() - start
    run = f"{time.time():.0f}"  # keys unique per run, so a reused database does not answer from its ledger
    timings = []
    for n, lead in enumerate(leads):
        key = f"bench:{run}:{n}"
        start = time.perf_counter()
        decision = assign.decide(svc, key, lead)
        with svc.sessions.begin() as session:
            assign.record(session, key, decision, reason="bench", status="kept", now=svc.clock.now())
        timings.append(time.perf_counter() - start)
    svc.close()
    ordered = sorted(timings)
    return {
        "backend": make_url(url).get_backend_name(),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "roster_load_s": roster_load,
    }


if __name__ == "__main__":
    sys.exit(main())

"""Lead import benchmark: the rows of one POST /api/leads (1000 by default) through
app/intake/leads.py, in chunks (``import_leads``) and one lead at a time (``import_one`` per row,
the path the chunks replaced: the baseline, measured in the same run).

    python bench/leads.py [--leads 1000 --chunk 200 --dealers 20 --advisors-per-dealer 10]
                          [--repeat 3 --seed 7]
                          [--database-url postgresql+psycopg://user@host/db] [--redis-url redis://…]

Every run imports the same rows into a fresh store (a SQLite file, or a new database created on
the given PostgreSQL server and dropped after the run) with the same roster and an emptied Redis,
so each variant starts from nothing and pays for every lead's decision, rows and card job. The
rows: leads spread over the dealers and the models they sell (1 in 20 a model the dealer does not
sell: re-routed), 1 in 10 given by city instead of dealer, 2 % repeating an earlier row's key and
2 % invalid. Capacity is ample: nearly every lead gets an advisor and a card job.

Prints, per variant, the median seconds of ``--repeat`` runs, milliseconds per row, SQL
statements and commits per row, and the ratio; and checks that both variants gave every row the
same outcome and advisor. Target: 4x faster than one at a time on PostgreSQL; faster on SQLite.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event, insert

from bench.common import fresh_database

MODELS = ["RAV4", "COROLLA", "CAMRY", "BZ4X", "HIGHLANDER", "SIENNA"]
TARGET = {"postgresql": 4.0, "sqlite": 1.0}


def build_roster(dealer_count: int, per_dealer: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Dealers two to a city, each selling 3-4 models; advisors with 1-2 of their dealer's models."""
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    dealers, advisors = [], []
    for d in range(dealer_count):
        models = sorted(rnd.sample(MODELS, rnd.randint(3, 4)))
        dealers.append(
            dict(
                code=f"D{d:03d}",
                name=f"dealer {d}",
                region="east",
                city=f"city{d // 2:02d}",
                lat=30 + rnd.uniform(-2, 2),
                lon=120 + rnd.uniform(-2, 2),
                models=models,
                territory=[],
                updated_at=now,
            )
        )
        for a in range(per_dealer):
            advisors.append(
                dict(
                    userid=f"adv{d:03d}{a:02d}",
                    name=f"advisor {d}.{a}",
                    dealer_code=f"D{d:03d}",
                    active=True,
                    capacity_per_day=100,
                    max_open_leads=500,
                    models=sorted(rnd.sample(models, rnd.randint(1, 2))),
                    languages=["zh"],
                    segments=["prospect"],
                    personas=[],
                    seniority=rnd.randint(0, 3),
                    acceptance_rate=rnd.uniform(0.4, 0.95),
                    median_first_response_s=rnd.uniform(30, 3600),
                    updated_at=now,
                )
            )
    return dealers, advisors


def build_rows(dealers: list[dict], count: int, seed: int) -> list[tuple[int, Any]]:
    rnd = random.Random(seed)
    rows: list[tuple[int, Any]] = []
    for n in range(1, count + 1):
        if rows and rnd.random() < 0.02:  # an earlier lead again
            rows.append((n, dict(rnd.choice(rows)[1])))
            continue
        dealer = rnd.choice(dealers)
        model = rnd.choice(MODELS) if rnd.random() < 0.05 else rnd.choice(dealer["models"])
        lead: dict[str, Any] = {
            "source": rnd.choice(["cdp", "autohome", "dongchedi", "website"]),
            "name": f"客户{n}",
            "phone": f"13{rnd.randrange(10**9):09d}",
            "model": model,
            "intent": round(rnd.uniform(0, 100), 1),
            "budget": "20-25万",
        }
        if rnd.random() < 0.1:
            lead["city"] = dealer["city"]
        else:
            lead["dealer"] = dealer["code"]
        if rnd.random() < 0.5:
            lead["external_ref"] = f"X{seed}-{n}"
        if rnd.random() < 0.02:
            lead["phone"] = "12345"  # invalid
        rows.append((n, lead))
    return rows


def one_at_a_time(svc, rows: list[tuple[int, Any]]) -> list:
    """The baseline: what import_leads did before chunks, one row after another."""
    from app.intake import leads

    with svc.sessions() as session:
        catalogue = leads.Catalogue.load(session)
    return [leads.import_one(svc, number, fields, catalogue) for number, fields in rows]


def in_chunks(chunk: int) -> Callable[[Any, list[tuple[int, Any]]], list]:
    def run(svc, rows: list[tuple[int, Any]]) -> list:
        from app.intake import leads

        return leads.import_leads(svc, rows, chunk_size=chunk).results

    return run


def one_run(
    importer: Callable[[Any, list[tuple[int, Any]]], list],
    database_url: str,
    redis_url: str,
    workdir: str,
    roster: tuple[list[dict], list[dict]],
    rows: list[tuple[int, Any]],
) -> dict[str, Any]:
    """Import ``rows`` into a fresh store; time only the import."""
    from app import create_app
    from app.intake import assign
    from app.store.models import Advisor, Dealer

    url, drop = fresh_database(database_url, "leads", Path(tempfile.mkdtemp(dir=workdir)))
    app = create_app(
        {"SCRM_MODE": "demo", "DATABASE_URL": url, "REDIS_URL": redis_url, "INSTANCE_PATH": workdir}
    )
    svc = app.extensions["scrm"]
    try:
        svc.redis.flushdb()
        with svc.sessions.begin() as session:
            session.execute(insert(Dealer), roster[0])
            session.execute(insert(Advisor), roster[1])
        assign.roster_cache(svc).get(svc)  # a web process has its roster cached
        counts = {"statements": 0, "commits": 0}

        def statement(*_args: Any) -> None:
            counts["statements"] += 1

        def commit(*_args: Any) -> None:
            counts["commits"] += 1

        event.listen(svc.engine, "before_cursor_execute", statement)
        event.listen(svc.engine, "commit", commit)
        with app.app_context():
            start = time.perf_counter()
            results = importer(svc, rows)
            seconds = time.perf_counter() - start
        return {
            "backend": svc.engine.dialect.name,
            "seconds": seconds,
            "results": [(r.row, r.status, r.advisor, r.errors) for r in results],
            **counts,
        }
    finally:
        svc.close()
        drop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=200, help="rows per chunk (app/intake/leads.py CHUNK)")
    parser.add_argument("--dealers", type=int, default=20)
    parser.add_argument("--advisors-per-dealer", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default="", help="PostgreSQL server (a new database per run)")
    parser.add_argument("--redis-url", default="", help="default: an embedded Redis (flushed per run)")
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))

    roster = build_roster(args.dealers, args.advisors_per_dealer, args.seed)
    rows = build_rows(roster[0], args.leads, args.seed)
    workdir = tempfile.mkdtemp(prefix="scrm-bench-leads-")
    variants = [("one at a time", one_at_a_time), (f"chunks of {args.chunk}", in_chunks(args.chunk))]
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    for _ in range(args.repeat):  # alternate the variants, so a slow spell hits both
        for name, importer in variants:
            measured[name].append(one_run(importer, args.database_url, args.redis_url, workdir, roster, rows))

    from app.redis_client import stop_embedded

    stop_embedded(workdir)
    backend = measured[variants[0][0]][0]["backend"]
    outcome = measured[variants[0][0]][0]["results"]
    statuses = [status for _, status, _, _ in outcome]
    print(
        f"store: {backend} (a fresh database per run), Redis: {args.redis_url or 'embedded'}; "
        f"{len(rows)} rows ({statuses.count('created')} created, {statuses.count('duplicate')} duplicates, "
        f"{statuses.count('invalid')} invalid), {args.dealers} dealers, "
        f"{args.dealers * args.advisors_per_dealer} advisors; median of {args.repeat} runs"
    )
    print(f"{'variant':<18}{'seconds':>9}{'ms/row':>9}{'statements/row':>16}{'commits/row':>13}")
    medians = {}
    for name, _ in variants:
        runs = measured[name]
        medians[name] = statistics.median(run["seconds"] for run in runs)
        statements = statistics.median(run["statements"] for run in runs) / len(rows)
        commits = statistics.median(run["commits"] for run in runs) / len(rows)
        print(
            f"{name:<18}{medians[name]:>9.2f}{medians[name] / len(rows) * 1000:>9.2f}"
            f"{statements:>16.2f}{commits:>13.3f}"
        )
    baseline, chunked = (name for name, _ in variants)
    ratio = medians[baseline] / medians[chunked]
    same = all(run["results"] == outcome for runs in measured.values() for run in runs)
    target = TARGET.get(backend, 1.0)
    print(
        f"{chunked}: {ratio:.1f}x faster than {baseline} (target {target:g}x on {backend}); "
        f"same outcome and advisor for every row in every run: {'yes' if same else 'NO'}"
    )
    return 0 if same and ratio >= target else 1


if __name__ == "__main__":
    sys.exit(main())

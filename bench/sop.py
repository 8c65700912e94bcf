"""SOP sweep benchmark: 1,000,000 enrollments, 1 % of them due.

    python bench/sop.py [--enrollments 1000000 --due-percent 1 --steps 500 --repeat 5]
                        [--database-url postgresql+psycopg://user@host/db] [--redis-url redis://…]

1. Builds the enrollments in a fresh store (a SQLite file, or a new database created on the given
   PostgreSQL server and dropped at the end): 70 % active — the due ones spread over the last
   day, the rest over the next 30 days — and 30 % finished (completed or exited: no due time).
2. Times one sweep's selection of the due steps (``app.sop.runner.due_steps``: the partial
   covering index on next_due_at) against two full-scan baselines measured in the same run: the
   same query with the index disabled (SQLite ``NOT INDEXED``; PostgreSQL with index scans turned
   off), and reading every active enrollment and filtering in Python. Median of ``--repeat`` runs,
   for all due steps and for one sweep batch (SOP_SWEEP_BATCH); prints both query plans.
3. Runs ``--steps`` due steps of the starter card prospect-welcome (reminder card + tag action)
   through the sweep's enqueue and one forking RQ worker against the WeCom sandbox on loopback,
   with 1 and with 10 steps per job, and prints steps executed per second per worker; the WeCom
   calls are timed on their own as well.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import bindparam, func, insert, select, text

from bench.common import fresh_database, median_time

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "sop_cards" / "prospect-welcome.yaml"
CHUNK = 20_000


def build(svc, version_id: int, count: int, due_percent: float, now: datetime, seed: int) -> dict[str, int]:
    from app.store.sop_models import SopEnrollment

    rnd = random.Random(seed)
    due_total = int(count * due_percent / 100)
    active_total = int(count * 0.7)
    kinds = ["due"] * due_total + ["active"] * (active_total - due_total) + ["done"] * (count - active_total)
    rnd.shuffle(kinds)
    table = SopEnrollment.__table__
    start = time.perf_counter()
    for offset in range(0, count, CHUNK):
        rows = []
        for n in range(offset, min(count, offset + CHUNK)):
            kind = kinds[n]
            enrolled = now - timedelta(days=rnd.uniform(0, 60))
            if kind == "due":
                due, status = now - timedelta(seconds=rnd.uniform(1, 86_400)), "active"
            elif kind == "active":
                due, status = now + timedelta(seconds=rnd.uniform(60, 30 * 86_400)), "active"
            else:
                due, status = None, rnd.choice(("completed", "exited"))
            rows.append(
                {
                    "card_id": "prospect-welcome",
                    "card_version_id": version_id,
                    "external_userid": f"wmbench{n:08d}",
                    "advisor_userid": f"adv{n % 2000:04d}",
                    "dealer_code": "SH01",
                    "status": status,
                    "exit_reason": "customer_left" if status == "exited" else None,
                    "trigger_kind": "contact_added",
                    "enrolled_at": enrolled,
                    "next_step": rnd.randint(0, 3) if status == "active" else 4,
                    "next_due_at": due,
                    "attempts": 0,
                    "updated_at": enrolled,
                }
            )
        with svc.sessions.begin() as session:
            session.execute(insert(table), rows)
    seconds = time.perf_counter() - start
    return {"due": due_total, "active": active_total, "finished": count - active_total, "seconds": seconds}


def analyze(svc) -> None:
    if svc.engine.dialect.name == "postgresql":
        with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE sop_enrollments"))
    else:
        with svc.engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def selection(svc, now: datetime, limit: int, repeat: int) -> dict[str, object]:
    """The sweep's query by the index, the same query forced to scan, and a Python scan."""
    from app.sop import runner
    from app.store.sop_models import SopEnrollment
    from app.store.types import UTCDateTime

    E = SopEnrollment.__table__
    postgres = svc.engine.dialect.name == "postgresql"

    def indexed():
        with svc.sessions() as session:
            return runner.due_steps(session, now, limit)

    def forced():
        with svc.sessions() as session:
            if postgres:
                for knob in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
                    session.execute(text(f"SET LOCAL {knob} = off"))
                return runner.due_steps(session, now, limit)
            stmt = text(
                "SELECT id, next_step FROM sop_enrollments NOT INDEXED WHERE next_due_at <= :now "
                "ORDER BY next_due_at, id LIMIT :limit"
            ).bindparams(bindparam("now", type_=UTCDateTime()))
            return [(int(a), int(b)) for a, b in session.execute(stmt, {"now": now, "limit": limit})]

    def python_scan():
        with svc.sessions() as session:
            rows = session.execute(
                select(E.c.id, E.c.next_step, E.c.next_due_at).where(E.c.status == "active")
            ).all()
        due = sorted((r for r in rows if r[2] <= now), key=lambda r: (r[2], r[0]))[:limit]
        return [(int(r[0]), int(r[1])) for r in due]

    t_index, a = median_time(indexed, repeat)
    t_forced, b = median_time(forced, repeat)
    t_python, c = median_time(python_scan, max(1, repeat // 2))
    assert a == b == c, "the three selections disagree"
    return {"rows": len(a), "indexed": t_index, "forced": t_forced, "python": t_python}


def plans(svc, now: datetime, limit: int) -> tuple[str, str]:
    from app.store.types import UTCDateTime

    query = (
        "SELECT id, next_step FROM sop_enrollments{hint} WHERE next_due_at <= :now "
        "ORDER BY next_due_at, id LIMIT :limit"
    )
    with svc.sessions() as session:
        if svc.engine.dialect.name == "postgresql":
            stmt = text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query.format(hint=""))
            params = {"now": now, "limit": limit}
            indexed = "\n".join(r[0] for r in session.execute(stmt, params))
            for knob in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
                session.execute(text(f"SET LOCAL {knob} = off"))
            forced = "\n".join(r[0] for r in session.execute(stmt, params))
            return indexed, forced
        out = []
        for hint in ("", " NOT INDEXED"):
            stmt = text("EXPLAIN QUERY PLAN " + query.format(hint=hint)).bindparams(
                bindparam("now", type_=UTCDateTime())
            )
            out.append("\n".join(str(r[-1]) for r in session.execute(stmt, {"now": now, "limit": limit})))
        return out[0], out[1]


def prepare_customers(
    svc, sandbox, version_id: int, count: int, now: datetime, prefix: str
) -> list[tuple[int, int]]:
    """``count`` customers with an advisor on both sides, each with a due step 0 of prospect-welcome."""
    from app.sandbox.models import Customer as SandboxCustomer
    from app.sandbox.models import Relation as SandboxRelation
    from app.store.models import Customer, FollowRelation
    from app.store.sop_models import SopEnrollment

    advisors = [f"sh{n:02d}" for n in range(20)]
    with sandbox.state.lock:
        for n in range(count):
            ext = f"{prefix}{n:05d}"
            advisor = advisors[n % len(advisors)]
            sandbox.state.customers[ext] = SandboxCustomer(ext, f"客户{n}")
            sandbox.state.relations[(advisor, ext)] = SandboxRelation(advisor, ext, sandbox.state.now())
    due = now - timedelta(days=400)  # more overdue than any of the million: first in the sweep
    with svc.sessions.begin() as session:
        session.execute(
            insert(Customer),
            [
                {
                    "external_userid": f"{prefix}{n:05d}",
                    "name": f"客户{n}",
                    "type": 1,
                    "profile": {"segment": "prospect", "model": "RAV4"},
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(count)
            ],
        )
        session.execute(
            insert(FollowRelation),
            [
                {
                    "advisor_userid": advisors[n % len(advisors)],
                    "external_userid": f"{prefix}{n:05d}",
                    "dealer_code": "SH01",
                    "status": "active",
                    "tag_ids": [],
                    "added_at": now,
                }
                for n in range(count)
            ],
        )
        ids = session.execute(
            insert(SopEnrollment).returning(SopEnrollment.id),
            [
                {
                    "card_id": "prospect-welcome",
                    "card_version_id": version_id,
                    "external_userid": f"{prefix}{n:05d}",
                    "advisor_userid": advisors[n % len(advisors)],
                    "dealer_code": "SH01",
                    "status": "active",
                    "trigger_kind": "contact_added",
                    "enrolled_at": now,
                    "next_step": 0,
                    "next_due_at": due,
                    "attempts": 0,
                    "updated_at": now,
                }
                for n in range(count)
            ],
        ).scalars()
        return [(int(i), 0) for i in ids]


def run_worker(app, svc, items: list[tuple[int, int]], per_job: int) -> float:
    from workers import sop_jobs
    from workers.queues import DEFAULT
    from workers.worker import build_worker

    svc.settings = svc.settings.model_copy(update={"SOP_STEPS_PER_JOB": per_job})
    svc.redis.set(sop_jobs.LOCK_KEY, "bench", ex=3600)  # the worker's own sweep stays out of the way
    assert sop_jobs.enqueue_steps(svc, items) == len(items)
    with app.app_context():
        worker = build_worker(svc, (DEFAULT,))
        start = time.perf_counter()
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        return time.perf_counter() - start


def wecom_call_time(svc, calls: int) -> float:
    from app.intake import notify

    start = time.perf_counter()
    for n in range(calls):
        notify.send_card(svc, ["sh00"], f"bench {n}", "timing", "https://example.com/")
    return (time.perf_counter() - start) / calls


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enrollments", type=int, default=1_000_000)
    parser.add_argument("--due-percent", type=float, default=1.0)
    parser.add_argument(
        "--steps", type=int, default=500, help="due steps run through a worker per batch size"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default="", help="PostgreSQL server (a new database is made)")
    parser.add_argument("--redis-url", default="", help="default: an embedded Redis")
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))

    from app import create_app
    from app.intake import tagging
    from app.sandbox import SandboxConfig, run_sandbox
    from app.sop.loader import Library
    from app.sop.versions import load_cards
    from app.store.models import Advisor, Dealer
    from app.store.sop_models import SopEnrollment, SopStepRun

    url, drop = fresh_database(args.database_url, "sop")
    workdir = tempfile.mkdtemp(prefix="scrm-bench-sop-")
    sandbox = run_sandbox(SandboxConfig(rate_limit_per_minute=100_000_000, seed=args.seed))
    app = create_app(
        {
            "SCRM_MODE": "demo",
            "DATABASE_URL": url,
            "REDIS_URL": args.redis_url,
            "INSTANCE_PATH": workdir,
            "WECOM_API_BASE": sandbox.api_base,
            "WECOM_RATE_LIMIT_PER_MINUTE": 100_000_000,
            "LOG_LEVEL": "WARNING",
        }
    )
    svc = app.extensions["scrm"]
    try:
        if args.redis_url:
            svc.redis.flushdb()
        backend = svc.engine.dialect.name
        print(f"store: {backend} {'(new database on the given server)' if backend == 'postgresql' else url}")
        now = datetime.now(UTC).replace(microsecond=0)
        settings = svc.settings
        report = load_cards(
            svc,
            [CARD],
            Library(working_hours=settings.sop_working_hours, quiet_hours=settings.sop_quiet_hours),
        )
        version_id = report.outcomes[0].version_id

        built = build(svc, version_id, args.enrollments, args.due_percent, now, args.seed)
        start = time.perf_counter()
        analyze(svc)
        with svc.sessions() as session:
            total = session.scalar(select(func.count()).select_from(SopEnrollment))
        analyzed = time.perf_counter() - start
        waiting = built["active"] - built["due"]
        print(
            f"built {total:,} enrollments in {built['seconds']:.1f} s (+{analyzed:.1f} s analyze): "
            f"{built['due']:,} due, {waiting:,} active not yet due, {built['finished']:,} finished"
        )

        print("\n-- one sweep's selection of due steps (median of runs) --")
        for label, limit in (("all due", built["due"]), ("one sweep batch", settings.SOP_SWEEP_BATCH)):
            r = selection(svc, now, limit, args.repeat)
            print(
                f"{label:>16} ({r['rows']:,} rows): index {r['indexed'] * 1000:8.1f} ms | "
                f"same query, full scan {r['forced'] * 1000:8.1f} ms ({r['forced'] / r['indexed']:.0f}x) | "
                f"all active rows filtered in Python {r['python'] * 1000:8.1f} ms "
                f"({r['python'] / r['indexed']:.0f}x)"
            )
        indexed_plan, forced_plan = plans(svc, now, settings.SOP_SWEEP_BATCH)
        print("plan (index):\n  " + indexed_plan.replace("\n", "\n  "))
        print("plan (forced scan):\n  " + forced_plan.replace("\n", "\n  "))

        print(f"\n-- {args.steps} due steps through one forking RQ worker against the sandbox --")
        with svc.sessions.begin() as session:
            session.add(
                Dealer(
                    code="SH01",
                    name="一汽丰田上海浦东店",
                    region="east",
                    city="上海",
                    lat=31.2,
                    lon=121.5,
                    models=["RAV4"],
                    territory=[],
                    manager_userid=None,
                    updated_at=now,
                )
            )
            session.flush()
            for n in range(20):
                session.add(
                    Advisor(
                        userid=f"sh{n:02d}",
                        name=f"顾问{n}",
                        dealer_code="SH01",
                        capacity_per_day=20,
                        max_open_leads=200,
                        models=["RAV4"],
                        languages=[],
                        segments=[],
                        personas=[],
                        updated_at=now,
                    )
                )
        for n in range(20):
            sandbox.state.add_employee(f"sh{n:02d}", f"顾问{n}")
        sandbox.state.add_tags(None, "客户阶段", [{"name": s} for s in ("潜客", "意向", "战败", "车主")])
        tagging.sync_corp_tags(svc)
        per_call = wecom_call_time(svc, 200)
        print(f"WeCom call (message/send to the sandbox on loopback, this process): {per_call * 1000:.2f} ms")
        # Due steps are most overdue first: these run before any of the million.
        for per_job in (1, 10):
            before = sandbox.state.stats()["api_calls"]
            items = prepare_customers(svc, sandbox, version_id, args.steps, now, f"wmrun{per_job:02d}x")
            seconds = run_worker(app, svc, items, per_job)
            with svc.sessions() as session:
                done = session.scalar(
                    select(func.count())
                    .select_from(SopStepRun)
                    .where(SopStepRun.enrollment_id.in_([i for i, _ in items]))
                )
            after = sandbox.state.stats()["api_calls"]
            calls = {
                k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
            }
            wecom_s = sum(calls.values()) * per_call
            print(
                f"{per_job:>2} step(s) per job: {done}/{len(items)} steps in {seconds:.2f} s = "
                f"{done / seconds:.0f} steps/s per worker; WeCom calls {calls} "
                f"(≈{wecom_s / seconds:.0%} of the time at {per_call * 1000:.2f} ms each)"
            )
            assert done == len(items), "not every step ran"
    finally:
        svc.close()
        sandbox.stop()
        drop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())

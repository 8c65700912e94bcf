"""What the benchmarks share: a scratch database per run and a median timer."""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def fresh_database(url: str, label: str, folder: Path | None = None) -> tuple[str, Callable[[], None]]:
    """A new database on the given PostgreSQL server (dropped by the returned callable), or a
    SQLite file in ``folder`` (a new temporary folder by default) when ``url`` is empty."""
    if not url:
        folder = folder or Path(tempfile.mkdtemp(prefix=f"scrm-bench-{label}-"))
        return f"sqlite:///{folder}/bench.db", lambda: None
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url, lambda: None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    name = f"scrm_bench_{label}_{secrets.token_hex(4)}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return parsed.set(database=name).render_as_string(hide_password=False), drop


def median_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """The median seconds of ``repeat`` runs of ``fn``, and its last result."""
    timings, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings), result

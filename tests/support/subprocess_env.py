"""The environment a test gives a real `scrm` subprocess: the test's own database and Redis."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def scrm_env(svc, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SCRM_MODE": "test",
        "DATABASE_URL": svc.settings.database_url,
        "REDIS_URL": svc.redis_url,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTO_MIGRATE": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **extra,
    }

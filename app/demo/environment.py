"""The configuration every process of the demo runs with: demo mode on the embedded default
(a SQLite file and the embedded Redis in the demo's instance folder) against the local sandbox.

Whatever the caller's environment says about the database, Redis or WeCom is dropped: the demo
must run the same on a developer's laptop and in a CI job that points the test suite at
PostgreSQL, and must never talk to a real WeCom corp."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.config import SANDBOX_CREDENTIALS, Settings

LOOPBACK = "127.0.0.1,localhost"
# The Redis key of the simulated time every demo process shares (app.clock.SharedOffsetClock):
# the simulated days (app/demo/days.py) move it.
CLOCK_OFFSET_KEY = "scrm:demo:clock-offset"
DEALER_TOKEN = "demo-sh01-manager-token"  # noqa: S105 — SH01's manager's API token (campaigns)


def demo_settings(instance: Path, redis_url: str, api_base: str) -> dict[str, str]:
    """The settings the demo gives its children, as environment variables."""
    return {
        "SCRM_MODE": "demo",
        "INSTANCE_PATH": str(instance),
        "DATABASE_URL": "sqlite:///" + str(instance / "scrm.db"),
        "REDIS_URL": redis_url,
        "WECOM_API_BASE": api_base,
        "LOG_LEVEL": "WARNING",
        "AUTO_MIGRATE": "0",  # the demo process migrates once, before any child starts
        "CLOCK_OFFSET_KEY": CLOCK_OFFSET_KEY,
        "SOP_STEPS_PER_JOB": "50",
        # Campaigns (app/demo/campaigns.py): SH01's manager posts with a dealer token; results are
        # polled every second of real time (the demo moves the clock an hour at a time).
        "DEALER_API_TOKENS": f"SH01={DEALER_TOKEN}",
        "CAMPAIGN_POLL_INTERVAL": "1",  # fewer, larger step jobs: a fork per job, a few hundred steps a day
    }


def child_environment(settings: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any SCRM setting, plus ``settings``."""
    source = os.environ if base is None else base
    env = {key: value for key, value in source.items() if key not in Settings.model_fields}
    env.update(settings)
    # The workers call the sandbox on 127.0.0.1; a proxy configured for the internet must not
    # swallow those requests (requests honours HTTP(S)_PROXY unless the host is in NO_PROXY).
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = ",".join(part for part in (env.get(key, ""), LOOPBACK) if part)
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the log files as they happen
    return env


def in_process_config(settings: Mapping[str, str], **overrides: str) -> dict[str, Any]:
    """A ``create_app`` mapping that names every setting, so nothing is read from the caller's
    environment (create_app lets the mapping win over the environment key by key)."""
    config: dict[str, Any] = {
        name: field.get_default(call_default_factory=True) for name, field in Settings.model_fields.items()
    }
    config.update(SANDBOX_CREDENTIALS)
    config.update(settings)
    config.update(overrides)
    return config

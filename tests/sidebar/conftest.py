"""Sidebar fixtures: the sandbox as WeCom (OAuth codes, JS-SDK tickets), the seeded corp of
tests/bot/seed.py, a test client, and a shortcut that signs a client in as an advisor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.sandbox import SandboxConfig, SandboxServer, run_sandbox
from tests.bot import seed
from tests.bot.seed import WorkerThread


@pytest.fixture()
def wecom() -> Iterator[SandboxServer]:
    with run_sandbox(SandboxConfig(seed=9)) as server:
        for userid, name in seed.ADVISORS.items():
            server.state.add_employee(userid, name)
        server.state.add_employee("hq_zhang", "张总部")  # a member, not an advisor
        yield server


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom: SandboxServer) -> dict[str, Any]:
    return {**app_config, "WECOM_API_BASE": wecom.api_base}


@pytest.fixture()
def corp(svc) -> None:
    seed.corp(svc)


@pytest.fixture()
def worker(app) -> Iterator[WorkerThread]:
    with WorkerThread(app) as running:
        yield running


def signed_in(client, userid: str):
    """The client with a sidebar session for ``userid`` (what /sidebar/auth leaves behind)."""
    with client.session_transaction("/sidebar") as session:  # the session lives under /sidebar only
        session["advisor"] = userid
    return client

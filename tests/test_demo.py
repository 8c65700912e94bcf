"""`scrm demo`: the scenario as data, the environment it gives its children, and the real command
end to end in a subprocess, as `make demo` runs it.

The end-to-end test is valid on both CI runs (embedded default, and DATABASE_URL/REDIS_URL set
to PostgreSQL/Redis): the demo drops those variables and always runs on its own embedded default."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.demo.environment import child_environment, demo_settings, in_process_config
from app.demo.scenario import AdvisorTextsBot, CustomerAddsAdvisor, build_scenario

ROOT = Path(__file__).resolve().parents[1]


def test_scenario_is_deterministic_and_fits_wecom() -> None:
    scenario = build_scenario(200, seed=5)
    assert scenario == build_scenario(200, seed=5)
    assert scenario != build_scenario(200, seed=6)
    assert len(scenario.dealers) == 3 and len(scenario.advisors) == 12
    assert all(len(advisor.state) <= 30 for advisor in scenario.advisors)  # WeCom's limit
    assert len({advisor.state for advisor in scenario.advisors}) == 12
    assert scenario.duplicates == 11  # 5 % of 220 events
    actions = [action for phase in scenario.phases for action in phase.actions]
    assert sum(isinstance(a, CustomerAddsAdvisor) for a in actions) == 200
    assert all(a.interaction is None for a in actions if isinstance(a, AdvisorTextsBot))
    assert sum(scenario.expected_interactions().values()) == scenario.events - sum(
        isinstance(a, AdvisorTextsBot) for a in actions
    )


def test_a_customer_leaves_at_most_once() -> None:
    scenario = build_scenario(40, seed=1)
    leaving = [
        action.customer for action in scenario.phases[1].actions if not isinstance(action, AdvisorTextsBot)
    ]
    assert leaving and len(leaving) == len(set(leaving))


def test_children_never_see_the_callers_scrm_settings(tmp_path: Path) -> None:
    settings = demo_settings(tmp_path, "unix:///tmp/redis.sock", "http://127.0.0.1:9/cgi-bin/")
    caller = {
        "PATH": "/usr/bin",
        "DATABASE_URL": "postgresql://ci/test",
        "REDIS_URL": "redis://ci:6379/0",
        "WECOM_TOKEN": "real-token",
        "HQ_API_TOKEN": "real-hq-token",
    }
    env = child_environment(settings, caller)
    assert env["PATH"] == "/usr/bin"
    assert env["DATABASE_URL"] == "sqlite:///" + str(tmp_path / "scrm.db")
    assert env["REDIS_URL"] == "unix:///tmp/redis.sock"
    assert "WECOM_TOKEN" not in env and "HQ_API_TOKEN" not in env
    assert "127.0.0.1" in env["NO_PROXY"]
    config = in_process_config(settings)
    assert config["WECOM_TOKEN"] != "real-token" and config["SCRM_MODE"] == "demo"


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--customers", "40", "--seed", "3", "--timeout", "90",
         "--instance", str(folder)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr

    scenario = build_scenario(40, seed=3)
    expected = sum(scenario.expected_interactions().values())

    def number(label: str) -> int:
        found = re.search(rf"^\s+{label}\s+(\d+)", out, re.MULTILINE)
        assert found, f"no '{label}' line in the summary:\n{out}"
        return int(found.group(1))

    assert number("events emitted") == scenario.events
    assert number("rows stored") == scenario.events
    assert number("deduplicated") >= scenario.duplicates
    assert number("failed") == 0 and number("still pending") == 0
    assert number("interactions total") == expected
    assert number("HQ feed items") == expected
    assert "FAIL" not in out and "demo OK" in out
    assert not folder.exists()  # removed after a successful run without --keep

"""scrm campaign status ID --watch: the progress bar and the per-dealer table, refreshed until the
campaign is done or cancelled (without a terminal: one line per refresh); Ctrl-C stops watching."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.campaigns import results, submit
from app.cli import campaign as campaign_cli
from tests.campaigns.live import corp, create, customers, live_config, wecom

__all__ = ["corp", "wecom"]  # fixtures
CONFIRM = 601  # the sandbox's mass_send_confirm_delay (600 s) has passed


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom) -> dict[str, Any]:
    return live_config(app_config, wecom, CAMPAIGN_REMIND_AFTER=3600, CAMPAIGN_TASK_EXPIRY=24 * 3600)


@pytest.fixture()
def audience(svc, corp) -> dict[str, list[str]]:
    return {
        "sh_a": customers(svc, corp, "sh_a", 3, prefix="a"),
        "sh_b": customers(svc, corp, "sh_b", 2, prefix="b"),
    }


def test_watch_refreshes_until_the_campaign_is_done(svc, corp, audience, clock, scrm, monkeypatch) -> None:
    campaign_id = create(svc)
    steps = iter(["submit", "confirm", "poll"])
    sleeps: list[float] = []

    def move_on(seconds: float) -> None:  # what the worker does between two refreshes
        sleeps.append(seconds)
        step = next(steps)
        if step == "submit":
            submit.run(svc, campaign_id)
        elif step == "confirm":
            results.poll(svc, campaign_id)  # nothing confirmed yet: one poll that finds nothing
            clock.advance(CONFIRM)
        else:
            results.poll(svc, campaign_id)

    monkeypatch.setattr(campaign_cli, "_sleep", move_on)
    result = scrm("campaign", "status", str(campaign_id), "--watch", "--interval", "0.5")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    refreshes = [line for line in lines if re.match(r"^(scheduled|submitting|waiting|done)\s+\[", line)]
    assert [line.split()[0] for line in refreshes] == ["scheduled", "waiting", "waiting", "done"]
    assert sleeps == [0.5, 0.5, 0.5]
    assert "nothing targeted yet" in refreshes[0] and "not submitted yet" in refreshes[0]
    assert "[" + "=" * 40 + "] 0/5 settled (0%)" in refreshes[1]
    assert "5 targeted → 5 submitted (5 awaiting the advisor)" in refreshes[1]
    assert "[" + "#" * 40 + "] 5/5 settled (100%)" in refreshes[-1]
    assert "5 targeted → 5 submitted (0 awaiting the advisor) → sent 5 · not sent 0" in refreshes[-1]
    [row] = [line for line in lines if line.strip().startswith("SH01")]
    assert row.split() == ["SH01", "5", "0", "0", "5", "0", "0", "0", "0", "0"]
    assert lines[-1] == f"campaign {campaign_id} done"


def test_watch_stops_at_once_on_a_cancelled_campaign_and_on_ctrl_c(
    svc, corp, audience, scrm, monkeypatch
) -> None:
    campaign_id = create(svc)

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(campaign_cli, "_sleep", interrupted)
    result = scrm("campaign", "status", str(campaign_id), "--watch")
    assert result.exit_code == 0, result.output
    assert f"stopped watching campaign {campaign_id} (it goes on)" in result.output

    results.cancel(svc, campaign_id, actor="test")
    result = scrm("campaign", "status", str(campaign_id), "--watch")
    assert result.exit_code == 0 and result.output.startswith("cancelled")
    assert result.output.splitlines()[-1] == f"campaign {campaign_id} cancelled"


def test_the_one_shot_status_stays_the_default(svc, corp, audience, scrm) -> None:
    campaign_id = create(svc)
    out = scrm("campaign", "status", str(campaign_id)).output
    assert f"campaign {campaign_id} 'RAV4 试驾专场': scheduled" in out and "history:" in out
    assert "settled" not in out


def test_the_terminal_frame_has_the_bar_and_the_dealer_table() -> None:
    bucket = {"targeted": 10, "queued": 2, "submitted": 3, "sent": 4, "not_sent": 0, "not_friend": 1,
              "over_limit": 0, "failed": 0, "cancelled": 0}  # fmt: skip
    figures = {**bucket, "by_dealer": {"SH01": bucket}, "by_advisor": {}, "tasks": {}, "reminders": 2}
    frame = campaign_cli._frame({"id": 7, "name": "x", "state": "waiting"}, figures)
    assert frame[0] == "campaign 7 'x': waiting"
    assert frame[1] == "[" + "#" * 20 + "=" * 12 + "." * 8 + "] 5/10 settled (50%)"
    assert frame[2].startswith("10 targeted → 8 submitted (3 awaiting the advisor) → sent 4")
    assert frame[2].endswith("not a friend 1 · over limit 0 · failed 0 · cancelled 0; reminders 2")
    assert frame[4].split() == ["SH01", "10", "2", "3", "4", "0", "1", "0", "0", "0"]

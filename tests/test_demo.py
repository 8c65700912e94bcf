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

from app.demo.days import card_tags, sop_cards_folder
from app.demo.environment import child_environment, demo_settings, in_process_config
from app.demo.scenario import (
    LEAD_LINK,
    LEAD_UNIONID,
    OWN,
    SHARED,
    AdvisorTextsBot,
    CustomerAddsAdvisor,
    CustomerDeletesAdvisor,
    build_scenario,
)
from app.intake import state as states
from app.intake.leads import LeadIn
from app.intake.roster import DEMO_ROSTER, read_roster_file
from app.sop.loader import Library, read_cards

ROOT = Path(__file__).resolve().parents[1]


def test_scenario_is_deterministic_and_fits_wecom() -> None:
    scenario = build_scenario(200, seed=5)
    assert scenario == build_scenario(200, seed=5)
    assert scenario != build_scenario(200, seed=6)
    assert len(scenario.dealers) == 3 and len(scenario.advisors) == 13
    active = [advisor for advisor in scenario.advisors if advisor.active]
    assert len(active) == 12 and len({advisor.state for advisor in active}) == 12
    posters = [state for dealer in scenario.dealers for state in dealer.shared_states]
    assert len(posters) == 11  # SZ01 does not sell the bZ4X: no poster for it
    for state in [*posters, *(advisor.state for advisor in active)]:
        assert len(state) <= states.MAX_LENGTH  # WeCom's limit
        assert states.parse(state).channel in ("qr", "ad") and states.parse(state).model
    assert all(states.parse(state).is_shared for state in posters)
    assert scenario.events == 220 and scenario.duplicates == 11  # 5 % of the scripted events
    assert scenario.count(CustomerAddsAdvisor) == 200
    ways = scenario.ways()
    assert (ways[SHARED], ways[OWN], ways[LEAD_LINK] + ways[LEAD_UNIONID]) == (90, 70, 40)
    assert 0 < ways[LEAD_UNIONID] < ways[LEAD_LINK]  # a few link by unionid
    assert scenario.refusals == 14 and sorted(scenario.refusal_order) == [
        index for index, customer in enumerate(scenario.customers) if customer.way == SHARED
    ]


def test_customers_fit_the_roster() -> None:
    scenario = build_scenario(200, seed=5)
    roster = read_roster_file(DEMO_ROSTER)
    assert [d.code for d in scenario.dealers] == [d.row.code for d in roster.dealers]
    assert [a.userid for a in scenario.advisors] == [a.row.userid for a in roster.advisors]
    assert scenario.managers == ("sh01_mgr", "hz01_mgr", "sz01_mgr")
    for customer in scenario.customers:
        if customer.way == SHARED:
            assert customer.model in scenario.dealer(customer.dealer).models
        elif customer.way == OWN:
            advisor = scenario.advisor(customer.advisor)
            assert advisor.active and advisor.model == customer.model and advisor.dealer == customer.dealer
        else:
            lead = scenario.leads[customer.lead]
            assert scenario.customers[lead.customer] == customer and lead.model == customer.model
            assert lead.unionid or customer.way == LEAD_LINK


def test_leads_are_valid_and_some_are_re_routed() -> None:
    scenario = build_scenario(200, seed=5)
    assert len(scenario.leads) == 44  # 40 customers' leads and 4 whose customer adds nobody
    assert sum(lead.customer is None for lead in scenario.leads) == 4
    for lead in scenario.leads:
        LeadIn.model_validate(lead.fields())  # what /api/leads validates (dealers and models aside)
    for field in ("phone", "external_ref"):
        assert len({getattr(lead, field) for lead in scenario.leads}) == 44
    unionids = [lead.unionid for lead in scenario.leads if lead.unionid]
    assert unionids and len(set(unionids)) == len(unionids)
    cross = [lead for lead in scenario.leads if lead.cross_territory]
    assert cross and all(lead.model == "BZ4X" and lead.city in ("苏州", "无锡") for lead in cross)
    assert "BZ4X" not in scenario.dealer("SZ01").models
    assert any(lead.dealer is None for lead in scenario.leads)  # routed by the city alone


def test_a_customer_leaves_at_most_once() -> None:
    scenario = build_scenario(40, seed=1)
    leaving = [
        action.customer for action in scenario.follow_up.actions if not isinstance(action, AdvisorTextsBot)
    ]
    assert leaving and len(leaving) == len(set(leaving))
    assert scenario.count(CustomerDeletesAdvisor) >= 1


def test_the_demo_creates_the_tags_the_starter_cards_name() -> None:
    cards = [f.card for f in read_cards([sop_cards_folder()], Library()) if f.card is not None]
    assert len(cards) == 7
    tags = set().union(*(card_tags(card) for card in cards))
    assert {"活动:试驾专场", "活动:战败召回", "活动:老带新", "客户阶段:潜客", "客户阶段:车主"} <= tags


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
    assert env["CLOCK_OFFSET_KEY"] == config["CLOCK_OFFSET_KEY"] != ""  # one simulated time for all


@pytest.mark.slow
def test_the_capacity_check_catches_an_advisor_given_too_much() -> None:
    from collections import Counter

    from app.demo.report import Observed, _capacity_check

    seen = Observed(platform={}, statuses={}, rows=0, deliveries=0, interactions={}, feed=None, played=None)  # type: ignore[arg-type]
    seen.limits = {"a1": (2, 5), "a2": (3, 1)}
    seen.engine_load = Counter({("a1", "2026-11-24"): 2, ("a2", "2026-11-24"): 1})
    seen.day_load = Counter({("a1", "2026-11-24"): 3, ("a2", "2026-11-24"): 1})  # a1: one own-code add
    seen.open_leads = Counter({"a1": 2, "a2": 1})
    check = _capacity_check(seen)
    assert check.ok and "3 engine choices, 1 advisor-days at capacity" in check.text

    seen.engine_load[("a1", "2026-11-24")] = 3
    assert not _capacity_check(seen).ok and "a1 got 3 on 2026-11-24 (capacity 2)" in _capacity_check(seen).text
    seen.engine_load[("a1", "2026-11-24")] = 2
    seen.open_leads["a2"] = 2
    assert not _capacity_check(seen).ok and "a2 holds 2 open leads (at most 1)" in _capacity_check(seen).text


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

    def number(label: str) -> int:
        found = re.search(rf"^\s+{label}\s+(\d+)", out, re.MULTILINE)
        assert found, f"no '{label}' line in the summary:\n{out}"
        return int(found.group(1))

    emitted = number("events emitted")
    hand_overs = number("completed") + number("refused")
    assert emitted == scenario.events + hand_overs  # the scripted events and the hand-overs' ends
    assert number("rows stored") == emitted
    assert number("deduplicated") >= scenario.duplicates
    assert number("failed") == 0 and number("still pending") == 0
    assert number("customers added") == 40
    assert number("welcomes sent") == 40 and number("within the code's life") == 40
    assert number("transfers started") == hand_overs and number("still transferring") == 0
    assert number("churn alert cards") == scenario.count(CustomerDeletesAdvisor)
    assert number("leads imported") == len(scenario.leads)
    assert number("linked") == sum(lead.customer is not None for lead in scenario.leads)
    assert number("lead cards sent") == len(scenario.leads)
    total = re.search(r"^\s+total((?:\s+\d+)+)$", out, re.MULTILINE)
    assert total, out
    assigned, kept, handed_over, completed, refused, _, alerts, leads, linked, no_advisor = map(
        int, total.group(1).split()
    )
    assert assigned + no_advisor >= 40 and kept + handed_over == assigned
    assert (completed, refused, alerts) == (
        number("completed"),
        number("refused"),
        number("churn alert cards"),
    )
    assert (leads, linked) == (number("leads imported"), number("linked"))
    assert number("interactions total") == number("HQ feed items") > 0
    # the simulated days: the starter SOP cards, their enrollments, steps and reminders
    assert number("cards loaded") == 7
    assert number("enrollments") > 0 and number("enrollments finished") > 0
    assert number("steps run") == number("reminders sent") > 0
    assert number("exits") >= 1  # high intent moved someone to the intent stage: out of prospect-welcome
    welcome = re.search(
        r"^\s+prospect-welcome\s+(\d+) enrolled\s+steps 1:(\d+) 2:(\d+) 3:(\d+) 4:(\d+)\s+skipped (\d+)"
        r"\s+finished (\d+)\s+exited (\d+)$",
        out,
        re.MULTILINE,
    )
    assert welcome, out
    enrolled, *steps, skipped, finished, exited = map(int, welcome.groups())
    assert enrolled > 0 and all(count > 0 for count in steps) and skipped == 0
    assert finished + exited == enrolled and steps[0] == enrolled and steps[-1] == finished
    for card in ("high-intent-follow-up", "test-drive-invite"):
        assert re.search(rf"^\s+{card}\s+[1-9]\d* enrolled", out, re.MULTILINE), out
    # the campaigns: HQ's and SH01's manager's, submitted, reminded, settled
    campaigns = re.search(
        r"^\s+campaigns — 2 via POST /api/campaigns \(#(\d+) done, #(\d+) done\)", out, re.M
    )
    assert campaigns, out
    audience = re.search(r"^\s+audience\s+(\d+)\s+frozen at submission", out, re.MULTILINE)
    assert audience and int(audience.group(1)) > 0, out
    outcomes = {
        label: int(found.group(1))
        for label in ("submitted", "sent", "not sent", "not a friend", "over limit", "advisors reminded")
        if (found := re.search(rf"^\s+{label}\s+(\d+)", out[campaigns.start() :], re.MULTILINE))
    }
    assert outcomes["submitted"] == int(audience.group(1))
    assert (
        outcomes["sent"] + outcomes["not sent"] + outcomes["not a friend"] + outcomes["over limit"]
        == (outcomes["submitted"])
    )
    assert 1 <= outcomes["advisors reminded"] <= 3 * 2  # one decliner, at most 3 per task
    covers = re.search(r"^\s+covers uploaded\s+(\d+)", out[campaigns.start() :], re.MULTILINE)
    assert covers and int(covers.group(1)) == 1, out  # HQ's mini-program: one upload for all batches
    assert "dry run by SH01's manager (dealer token)" in out
    for check in (
        "every targeted customer handed to WeCom exactly once",
        "results recorded for every submitted customer once the tasks settled",
        "only the advisor who did not confirm was reminded, at most 3 times per task",
        "the campaign_* interactions match the recipient rows",
        "HQ's mini-program cover uploaded as WeCom media once and named by each of its",
        "the HQ feed pages through each of them once",
        "every starter SOP card loaded",
        "every enrollment's due steps ran exactly once",
        "one reminder per step run, to its advisor",
        "prospect-welcome ran through all its steps",
        "the interaction log holds what happened, kind by kind",
    ):
        assert re.search(rf"^\s+ok\s+{re.escape(check)}", out, re.MULTILINE), check
    assert "FAIL" not in out and "demo OK" in out
    assert not folder.exists()  # removed after a successful run without --keep

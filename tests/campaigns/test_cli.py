"""scrm campaign create FILE.yaml [--dry-run] [--dealer CODE], status ID, cancel ID."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.campaigns.model import CampaignSpec
from tests.campaigns.seed import add, seed_roster

EXAMPLE = Path(__file__).parents[2] / "app" / "campaigns" / "examples" / "rav4-test-drive.yaml"


@pytest.fixture()
def campaign_file(svc, clock, tmp_path):
    with svc.sessions() as session:
        seed_roster(session)
        add(session, "c1", "sh_a1", tags=["t_rav4"], profile={"segment": "prospect"}, added_days_ago=0)
        add(session, "c2", "hz_a1", tags=["t_rav4"], profile={"segment": "prospect"}, added_days_ago=0)
        add(session, "c3", "bj_a1", tags=["t_rav4"], profile={"segment": "prospect"}, added_days_ago=0)
        session.commit()
    body = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    body["audience"] = "tag(意向车型:RAV4) and stage(prospect) and not tag(活动:试驾专场)"
    body["schedule"] = {"send_at": None}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def test_the_example_file_is_a_valid_spec():
    spec = CampaignSpec.model_validate(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    assert [a.msgtype for a in spec.content.attachments] == ["link", "image"]
    assert spec.content.attachments[0].to_wecom()["msgtype"] == "link"
    assert [atom.kind for atom in spec.filter.atoms()] == ["tag", "stage", "tag", "region", "added_since"]


def test_dry_run_create_status_cancel(scrm, campaign_file):
    result = scrm("campaign", "create", str(campaign_file), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run, nothing stored" in result.output
    assert "audience: 3 customer(s)" in result.output
    assert "sh_a1" in result.output and "BJ01" in result.output

    result = scrm("campaign", "create", str(campaign_file), "--dealer", "sh01")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("campaign ")
    campaign_id = result.output.split()[1]  # ids are not reset between tests on PostgreSQL
    assert "scheduled, scope SH01" in result.output
    assert "audience: 1 customer(s)" in result.output

    status = scrm("campaign", "status", campaign_id)
    assert status.exit_code == 0, status.output
    assert f"campaign {campaign_id} 'RAV4 试驾专场 · 华东 10 月': scheduled" in status.output
    assert "by dealer:SH01" in status.output
    assert "- → scheduled  by dealer:SH01" in status.output

    assert scrm("campaign", "cancel", campaign_id, "--reason", "test").exit_code == 0
    assert "cancelled  by cli (test)" in scrm("campaign", "status", campaign_id).output
    again = scrm("campaign", "cancel", campaign_id)
    assert again.exit_code == 1
    assert "is cancelled" in again.output
    assert scrm("campaign", "status", "999999").exit_code == 1


def test_refusals(scrm, campaign_file, tmp_path):
    body = yaml.safe_load(campaign_file.read_text(encoding="utf-8"))
    body["audience"] = "dealer(HZ01)"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    result = scrm("campaign", "create", str(other), "--dealer", "SH01")
    assert result.exit_code == 1
    assert "cannot target dealer HZ01" in result.output

    body["audience"] = "tag(意向车型:RAV4) or"
    body["content"] = {}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    result = scrm("campaign", "create", str(bad))
    assert result.exit_code == 1
    assert "content: content needs a text or at least one attachment" in result.output
    assert "audience: column 18" in result.output
    assert "nothing was created" in result.output

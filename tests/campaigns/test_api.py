"""POST /api/campaigns (dry run, create, draft), GET /api/campaigns/<id>, cancel and schedule,
with the HQ token and dealer tokens (scope enforcement)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.config import ConfigError, load_settings
from tests.campaigns.conftest import HZ01_TOKEN, SH01_TOKEN
from tests.campaigns.seed import add, seed_roster

HQ = {"Authorization": "Bearer sandbox-hq-token"}
SH01 = {"Authorization": f"Bearer {SH01_TOKEN}"}
HZ01 = {"Authorization": f"Bearer {HZ01_TOKEN}"}


@pytest.fixture()
def store(svc):
    with svc.sessions() as session:
        seed_roster(session)
        add(session, "c1", "sh_a1", tags=["t_rav4"], profile={"segment": "prospect"})
        add(session, "c2", "sh_a2", tags=["t_rav4"], profile={"segment": "prospect"})
        add(session, "c3", "hz_a1", tags=["t_rav4"], profile={"segment": "prospect"})
        add(session, "c4", "bj_a1", tags=["t_rav4", "t_event"], profile={"segment": "prospect"})
        session.commit()


def spec(**overrides):
    body = {
        "name": "RAV4 试驾",
        "content": {
            "text": "周末试驾",
            "attachments": [{"link": {"title": "预约", "url": "https://e.com/a"}}],
        },
        "audience": "tag(意向车型:RAV4) and not tag(活动:试驾专场)",
    }
    body.update(overrides)
    return body


def test_dry_run_counts_and_stores_nothing(client, store):
    response = client.post("/api/campaigns?dry_run=1", json=spec(), headers=HQ)
    assert response.status_code == 200, response.json
    assert response.json["dry_run"] is True
    assert response.json["scope"] == {"dealer": None}
    assert response.json["audience"] == {
        "total": 3,
        "by_dealer": {"HZ01": 1, "SH01": 2},
        "by_advisor": {"hz_a1": 1, "sh_a1": 1, "sh_a2": 1},
    }
    assert client.get("/api/campaigns/1", headers=HQ).status_code == 404


def test_an_id_past_the_database_integer_is_404_not_500(client, store) -> None:
    huge = 99999999999999999999
    assert client.get(f"/api/campaigns/{huge}", headers=HQ).status_code == 404
    assert client.post(f"/api/campaigns/{huge}/cancel", headers=HQ).status_code == 404
    assert client.post(f"/api/campaigns/{huge}/schedule", headers=HQ).status_code == 404


def test_create_read_cancel(client, store, clock):
    send_at = (clock.now() + timedelta(days=1)).astimezone(UTC)
    body = spec(schedule={"send_at": send_at.isoformat()}, scope={"dealer": "sh01"})
    response = client.post("/api/campaigns", json=body, headers=HQ)
    assert response.status_code == 201, response.json
    data = response.json
    assert response.headers["Location"] == f"/api/campaigns/{data['id']}"
    assert data["state"] == "scheduled"
    assert data["scope"] == {"dealer": "SH01"}
    assert data["created_by"] == "hq"
    assert datetime.fromisoformat(data["send_at"]) == send_at
    assert data["audience"]["total"] == 2
    assert data["audience"]["by_advisor"] == {"sh_a1": 1, "sh_a2": 1}
    assert [(h["from"], h["to"], h["by"]) for h in data["history"]] == [(None, "scheduled", "hq")]

    assert client.get(f"/api/campaigns/{data['id']}", headers=HQ).json == data
    assert client.get(f"/api/campaigns/{data['id']}", headers=SH01).status_code == 200  # scoped to SH01
    assert client.get(f"/api/campaigns/{data['id']}", headers=HZ01).status_code == 404
    # SH01 may read it but not cancel what HQ made
    assert client.post(f"/api/campaigns/{data['id']}/cancel", headers=SH01).status_code == 403

    cancelled = client.post(f"/api/campaigns/{data['id']}/cancel", json={"reason": "typo"}, headers=HQ)
    assert cancelled.status_code == 200
    assert cancelled.json["state"] == "cancelled"
    assert cancelled.json["history"][-1]["reason"] == "typo"
    again = client.post(f"/api/campaigns/{data['id']}/cancel", headers=HQ)
    assert again.status_code == 409
    assert again.json["state"] == "cancelled"


def test_draft_then_schedule(client, store):
    data = client.post("/api/campaigns?draft=1", json=spec(), headers=HQ).json
    assert data["state"] == "draft"
    scheduled = client.post(f"/api/campaigns/{data['id']}/schedule", headers=HQ)
    assert scheduled.json["state"] == "scheduled"
    assert client.post(f"/api/campaigns/{data['id']}/schedule", headers=HQ).status_code == 409


def test_dealer_token_is_restricted_to_its_dealer(client, store):
    # no scope given: the dealer's own; the audience is only its relations
    response = client.post("/api/campaigns", json=spec(), headers=SH01)
    assert response.status_code == 201, response.json
    assert response.json["scope"] == {"dealer": "SH01"}
    assert response.json["created_by"] == "dealer:SH01"
    assert response.json["audience"]["by_dealer"] == {"SH01": 2}
    campaign_id = response.json["id"]
    assert client.get(f"/api/campaigns/{campaign_id}", headers=HZ01).status_code == 404
    assert client.get(f"/api/campaigns/{campaign_id}", headers=HQ).status_code == 200
    assert client.post(f"/api/campaigns/{campaign_id}/cancel", headers=HZ01).status_code == 404
    assert client.post(f"/api/campaigns/{campaign_id}/cancel", headers=SH01).json["state"] == "cancelled"

    # another dealer in the scope or in the filter (even under `not`): 403, nothing stored
    for body in (
        spec(scope={"dealer": "HZ01"}),
        spec(audience="tag(意向车型:RAV4) and dealer(HZ01)"),
        spec(audience="not dealer(HZ01)"),
    ):
        refused = client.post("/api/campaigns?dry_run=1", json=body, headers=SH01)
        assert refused.status_code == 403, body
        assert refused.json["error"] == "forbidden"
    own = client.post("/api/campaigns?dry_run=1", json=spec(audience="dealer(SH01)"), headers=SH01)
    assert own.status_code == 200
    assert own.json["audience"]["total"] == 2
    # HQ may target any dealer
    assert (
        client.post("/api/campaigns?dry_run=1", json=spec(scope={"dealer": "HZ01"}), headers=HQ).json[
            "audience"
        ]["total"]
        == 1
    )


def test_auth_and_validation_errors(client, store, clock):
    assert client.post("/api/campaigns", json=spec()).status_code == 401
    assert (
        client.post("/api/campaigns", json=spec(), headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert client.get("/api/campaigns/1", headers={"Authorization": "Bearer nope"}).status_code == 401

    bad = client.post("/api/campaigns", json=spec(audience="tag(意向车型:RAV4) and"), headers=HQ)
    assert bad.status_code == 400
    assert bad.json["message"].startswith("audience: column 19: the filter ends")
    unknown = client.post("/api/campaigns", json=spec(audience="tag(意向车型:Camry)"), headers=HQ)
    assert unknown.status_code == 400
    assert unknown.json["column"] == 1
    assert "unknown tag" in unknown.json["message"]
    too_many = spec(content={"attachments": [{"image": {"media_id": "M"}}] * 10})
    response = client.post("/api/campaigns", json=too_many, headers=HQ)
    assert response.status_code == 400
    assert "at most 9 attachments" in response.json["message"]
    past = spec(schedule={"send_at": (clock.now() - timedelta(hours=1)).isoformat()})
    assert "in the past" in client.post("/api/campaigns", json=past, headers=HQ).json["message"]
    naive = spec(schedule={"send_at": "2030-01-01T10:00:00"})
    assert "UTC offset" in client.post("/api/campaigns", json=naive, headers=HQ).json["message"]
    assert client.post("/api/campaigns", json=spec(scope={"dealer": "XX01"}), headers=HQ).status_code == 400
    assert client.post("/api/campaigns", data="[1]", headers=HQ).status_code == 400


def test_dealer_tokens_are_validated_at_start_up():
    assert load_settings({"SCRM_MODE": "test", "DEALER_API_TOKENS": "sh01=a, HZ01=b"}).dealer_api_tokens == {
        "a": "SH01",
        "b": "HZ01",
    }
    for value, fragment in [
        ("SH01", "not CODE=token"),
        ("SH01=a,SH01=b", "two tokens"),
        ("SH01=a,HZ01=a", "not unique"),
        ("SH01=sandbox-hq-token", "not unique"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            load_settings({"SCRM_MODE": "test", "DEALER_API_TOKENS": value})

"""POST /api/leads: auth, body shapes, per-lead outcomes, limits."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.api.leads import MAX_LEADS
from app.intake import assign
from app.store.models import Lead
from tests.intake.test_leads import PHONE, lead_row, seed_roster

AUTH = {"Authorization": "Bearer sandbox-hq-token"}


@pytest.fixture()
def roster(svc) -> None:
    seed_roster(svc)


def _count(svc) -> int:
    with svc.sessions() as session:
        return session.scalar(select(func.count()).select_from(Lead)) or 0


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
def test_requires_the_hq_token(client, svc, headers) -> None:
    response = client.post("/api/leads", json={"leads": [lead_row()]}, headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert _count(svc) == 0


def test_a_batch_gets_one_outcome_per_lead(client, svc, roster) -> None:
    body = {
        "leads": [
            lead_row(),
            lead_row(phone="999"),
            lead_row(phone="+86 138-0000-0001"),  # the first lead again
            lead_row(model="BZ4X", city="杭州", dealer="HZ01", external_ref="AH-1", source="autohome"),
        ]
    }
    response = client.post("/api/leads", json=body, headers=AUTH)
    assert response.status_code == 200
    data = response.json
    first, fourth = data["results"][0]["lead_id"], data["results"][3]["lead_id"]
    assert fourth != first  # (PostgreSQL leaves gaps: a duplicate's insert takes an id)
    assert data["results"] == [
        {"row": 1, "status": "created", "lead_id": first, "advisor": "zhang.wei", "errors": []},
        {
            "row": 2,
            "status": "invalid",
            "lead_id": None,
            "advisor": None,
            "errors": ["phone: must be a Chinese mobile number: 11 digits starting 13-19 (+86 allowed)"],
        },
        {"row": 3, "status": "duplicate", "lead_id": first, "advisor": "zhang.wei", "errors": []},
        {"row": 4, "status": "created", "lead_id": fourth, "advisor": "wang.fang", "errors": []},
    ]
    assert (data["created"], data["duplicates"], data["invalid"]) == (2, 1, 1)
    assert PHONE not in response.get_data(as_text=True)
    assert _count(svc) == 2


def test_a_single_lead_object(client, svc, roster) -> None:
    response = client.post("/api/leads", json=lead_row(external_ref="X1"), headers=AUTH)
    assert response.status_code == 200
    assert response.json["results"][0]["status"] == "created"
    assert response.json["created"] == 1


def test_entries_that_are_not_objects_are_invalid_rows(client, svc, roster) -> None:
    response = client.post("/api/leads", json={"leads": ["x", 3, lead_row()]}, headers=AUTH)
    assert response.status_code == 200
    assert [r["status"] for r in response.json["results"]] == ["invalid", "invalid", "created"]
    assert response.json["results"][0]["errors"] == ["lead: must be an object of lead fields"]


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        ("{not json", "application/json", "the body must be a JSON object"),
        ("", "application/json", "the body must be a JSON object"),
        ("[1, 2]", "application/json", "the body must be a JSON object"),
        ('{"leads": {"a": 1}}', "application/json", '"leads" must be a list'),
        ("name=x", "application/x-www-form-urlencoded", "the body must be a JSON object"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_400(client, svc, data, content_type, message) -> None:
    response = client.post("/api/leads", data=data, content_type=content_type, headers=AUTH)
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"
    assert response.json["message"].startswith(message)


def test_more_than_1000_leads_is_413_and_nothing_is_stored(client, svc, roster) -> None:
    body = {"leads": [lead_row(external_ref=str(i)) for i in range(MAX_LEADS + 1)]}
    response = client.post("/api/leads", json=body, headers=AUTH)
    assert response.status_code == 413
    assert response.json["error"] == "request_entity_too_large"
    assert "at most 1000" in response.json["message"]
    assert _count(svc) == 0


def test_a_huge_body_is_413(client, svc) -> None:
    body = json.dumps({"leads": [{"name": "x" * 1000}] * 5000})
    response = client.post("/api/leads", data=body, content_type="application/json", headers=AUTH)
    assert response.status_code == 413
    assert response.json["error"] == "request_entity_too_large"


def test_assignment_busy_is_503_and_sending_again_finishes_the_leads(
    client, svc, roster, monkeypatch
) -> None:
    monkeypatch.setattr(assign, "LOCK_WAIT_SECONDS", 0.05)
    svc.redis.set(assign.LOCK_NAME, "another importer", px=10_000)
    response = client.post("/api/leads", json={"leads": [lead_row(external_ref="B1")]}, headers=AUTH)
    assert response.status_code == 503 and response.json["error"] == "service_unavailable"
    assert _count(svc) == 1  # stored, still new

    svc.redis.delete(assign.LOCK_NAME)
    response = client.post("/api/leads", json={"leads": [lead_row(external_ref="B1")]}, headers=AUTH)
    assert response.status_code == 200
    assert response.json["results"][0]["advisor"] is not None

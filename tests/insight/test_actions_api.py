"""POST /api/customers/<id>/actions (the CDP/DMS reports actions) and GET …/intent."""

from __future__ import annotations

import pytest

from app.store import interactions
from tests.insight.conftest import AUTH, logged, profile_of

ACTIONS = "/api/customers/wm_c1/actions"


def post(client, body, path: str = ACTIONS, headers=AUTH):
    return client.post(path, json=body, headers=headers)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
def test_both_endpoints_need_the_hq_token(client, customer, headers) -> None:
    assert post(client, {"kind": "store_visit", "id": "1"}, headers=headers).status_code == 401
    assert client.get("/api/customers/wm_c1/intent", headers=headers).status_code == 401
    assert logged(client.application.extensions["scrm"], "store_visit") == []


def test_an_action_scores_and_a_replay_counts_once(svc, client, customer) -> None:
    body = {
        "kind": "test_drive_booked",
        "id": "dms-7781",
        "advisor": "sh01_a01",
        "payload": {"model": "RAV4"},
    }
    response = post(client, body)
    assert response.status_code == 200
    assert response.json == {"score": 40.0, "band": "medium", "changed": True}
    for _ in range(2):
        assert post(client, body).json == {"score": 40.0, "band": "medium", "changed": False}
    (row,) = logged(svc, "test_drive_booked", "wm_c1")
    assert row.payload == {"model": "RAV4", "source_id": "dms-7781"}
    assert row.advisor_userid == "sh01_a01"
    assert len(logged(svc, "intent_changed", "wm_c1")) == 1
    assert profile_of(svc, "wm_c1")["intent"] == 40.0

    response = post(client, {"kind": "store_visit", "id": 7782, "occurred_at": "2026-11-20T10:30:00+08:00"})
    assert response.json == {"score": 70.0, "band": "high", "changed": True}
    (visit,) = logged(svc, "store_visit", "wm_c1")
    assert visit.occurred_at.isoformat() == "2026-11-20T02:30:00+00:00"

    intent = client.get("/api/customers/wm_c1/intent", headers=AUTH)
    assert intent.status_code == 200
    assert intent.json == {
        "score": 70.0,
        "band": "high",
        "counts": {"test_drive_booked": 1, "store_visit": 1},
    }


def test_unknown_customer_is_404(client, customer) -> None:
    response = post(client, {"kind": "store_visit", "id": "1"}, path="/api/customers/wm_nobody/actions")
    assert response.status_code == 404 and response.json["error"] == "not_found"
    assert client.get("/api/customers/wm_nobody/intent", headers=AUTH).status_code == 404


def test_a_customer_without_actions_is_zero_low(client, customer) -> None:
    response = client.get("/api/customers/wm_c1/intent", headers=AUTH)
    assert response.json == {"score": 0.0, "band": "low", "counts": {}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "bought_a_boat", "id": "1"}, "kind must be one of"),
        ({"kind": "intent_changed", "id": "1"}, "kind must be one of"),
        ({"id": "1"}, "kind must be one of"),
        ({"kind": "store_visit"}, "id"),
        ({"kind": "store_visit", "id": ""}, "id"),
        ({"kind": "store_visit", "id": "x" * 101}, "id"),
        ({"kind": "store_visit", "id": True}, "id"),
        ({"kind": "store_visit", "id": "1", "occurred_at": "yesterday"}, "occurred_at"),
        ({"kind": "store_visit", "id": "1", "occurred_at": "2026-11-20T10:30:00"}, "occurred_at"),
        # A DMS's "no date" placeholder: in UTC it is before year 1 (was a 500 from the store).
        ({"kind": "store_visit", "id": "1", "occurred_at": "0001-01-01T00:00:00+08:00"}, "occurred_at"),
        ({"kind": "store_visit", "id": "1", "occurred_at": "9999-12-31T23:59:59-08:00"}, "occurred_at"),
        ({"kind": "store_visit", "id": "1", "advisor": 5}, "advisor"),
        ({"kind": "store_visit", "id": "1", "payload": [1]}, "payload"),
        ({"kind": "store_visit", "id": "1", "payload": {"x": "y" * 5000}}, "payload"),
        ([{"kind": "store_visit", "id": "1"}], "JSON object"),
    ],
)
def test_bad_bodies_are_400_and_record_nothing(svc, client, customer, body, message: str) -> None:
    response = post(client, body)
    assert response.status_code == 400
    assert message in response.json["message"]
    with svc.sessions() as session:
        assert interactions.count(session) == 0


def test_a_body_that_is_not_json_is_400(client, customer) -> None:
    response = client.post(ACTIONS, data="kind=store_visit", headers=AUTH)
    assert response.status_code == 400 and response.is_json

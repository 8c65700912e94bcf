"""The sidebar's customer API: who may see whom, what a customer looks like, and reply_sent."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from app.insight import intent
from app.store.insight_models import TrackedLink
from app.store.models import Advisor, Interaction, RelationStatus
from app.store.sop_models import SopEnrollment
from tests.bot import seed
from tests.sidebar.conftest import signed_in

pytestmark = pytest.mark.usefixtures("corp")


def _reply(client, **changes):
    body = {
        "external_userid": "wm_wang",
        "card_id": "buying-questions",
        "step": 1,
        "reply_index": 0,
        "request_id": "req-1",
        **changes,
    }
    return client.post("/sidebar/api/replies", json=body)


def _sent(svc) -> list[Interaction]:
    with svc.sessions() as session:
        return list(session.scalars(select(Interaction).where(Interaction.kind == "reply_sent")))


# -- access -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/sidebar/api/me"),
        ("get", "/sidebar/api/customer?external_userid=wm_wang"),
        ("get", "/sidebar/api/jssdk?url=http://localhost:5000/sidebar"),
        ("post", "/sidebar/api/replies"),
    ],
)
def test_not_signed_in_is_401(client, method: str, path: str) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"


def test_another_advisors_customer_is_403(client) -> None:
    signed_in(client, "sh_b")
    response = client.get("/sidebar/api/customer?external_userid=wm_wang")
    assert response.status_code == 403
    assert response.json == {"error": "forbidden", "message": "you do not follow this customer"}
    assert _reply(signed_in(client, "sh_b")).status_code == 403


def test_an_unknown_customer_is_403_too(client) -> None:
    response = signed_in(client, "sh_a").get("/sidebar/api/customer?external_userid=wm_nobody")
    assert response.status_code == 403


def test_a_customer_who_left_is_403(client, svc) -> None:
    seed.customer(svc, "wm_gone", "赵磊", "sh_a", status=RelationStatus.LOST)
    assert signed_in(client, "sh_a").get("/sidebar/api/customer?external_userid=wm_gone").status_code == 403


def test_a_deactivated_advisor_is_403_and_signed_out(client, svc) -> None:
    signed_in(client, "sh_a")
    with svc.sessions.begin() as session:
        session.execute(update(Advisor).where(Advisor.userid == "sh_a").values(active=False))
    assert client.get("/sidebar/api/customer?external_userid=wm_wang").status_code == 403
    assert client.get("/sidebar/api/me").status_code == 401


def test_missing_external_userid_is_400(client) -> None:
    assert signed_in(client, "sh_a").get("/sidebar/api/customer").status_code == 400


# -- the customer ------------------------------------------------------------------------------


def test_own_customer(client, svc) -> None:
    response = signed_in(client, "sh_a").get("/sidebar/api/customer?external_userid=wm_wang")
    assert response.status_code == 200, response.json
    body = response.json
    assert body["customer"] == {
        "external_userid": "wm_wang",
        "name": "王建国",
        "profile": {"model": "RAV4", "segment": "prospect", "dealer": "SH01"},
        "stage": "prospect",
        "intent": {"score": None, "band": None},
    }
    [card] = body["cards"]
    assert {k: card[k] for k in ("card_id", "title", "version", "enrolled", "steps")} == {
        "card_id": "buying-questions",
        "title": "购车咨询",
        "version": 1,
        "enrolled": True,
        "steps": 2,
    }
    step = card["step"]
    assert (step["index"], step["at"]) == (1, "+1d 10:00")
    assert step["reminder"] == "给 王建国 发金融和置换方案。"
    assert step["quick_replies"] == [
        {"index": 0, "type": "text", "text": "王建国您好，给您算了全款和分期两种方案，您看看哪种合适？"},
        {
            "index": 1,
            "type": "miniprogram",
            "title": "在线获取专属报价",
            "appid": "wx3f8a2b6c9d1e4f70",
            "page": "pages/quote/index.html?model=RAV4",
            "picurl": "https://brand.example.com/static/mp/quote-cover.jpg",
        },
    ]
    assert step["qa"][0] == {
        "keywords": ["金融", "贷款"],
        "answer": "首付最低 20%，最长 5 年，厂家贴息以当期政策为准。",
    }


def test_links_go_through_tracked_links(client, svc) -> None:
    with svc.sessions.begin() as session:  # back to the first step, which has a link
        session.execute(
            update(SopEnrollment).where(SopEnrollment.external_userid == "wm_wang").values(next_step=1)
        )
    body = signed_in(client, "sh_a").get("/sidebar/api/customer?external_userid=wm_wang").json
    link = body["cards"][0]["step"]["quick_replies"][1]
    assert link["type"] == "link" and link["title"] == "试驾体验项目"
    assert link["url"].startswith(svc.settings.public_url("/r/"))
    with svc.sessions() as session:
        tracked = session.scalars(select(TrackedLink)).one()
    assert tracked.url == "https://brand.example.com/testdrive?model=RAV4"
    assert (tracked.external_userid, tracked.advisor_userid, tracked.card_id, tracked.step_index) == (
        "wm_wang",
        "sh_a",
        "buying-questions",
        0,
    )
    again = signed_in(client, "sh_a").get("/sidebar/api/customer?external_userid=wm_wang").json
    assert again["cards"][0]["step"]["quick_replies"][1]["url"] == link["url"]  # the same link again


def test_intent_from_the_intent_score(client, svc) -> None:
    with svc.sessions.begin() as session:
        intent.record_action(
            session,
            external_userid="wm_wang",
            kind="test_drive_booked",
            advisor="sh_a",
            dedup_key="test:booked",
            now=svc.clock.now(),
            settings=svc.settings,
        )
    body = signed_in(client, "sh_a").get("/sidebar/api/customer?external_userid=wm_wang").json
    assert body["customer"]["intent"] == {"score": 40.0, "band": "medium"}


def test_a_customer_enrolled_in_nothing_gets_the_cards_of_their_audience(client) -> None:
    body = signed_in(client, "sh_b").get("/sidebar/api/customer?external_userid=wm_liu").json
    assert [(c["card_id"], c["enrolled"], c["step"]["index"]) for c in body["cards"]] == [
        ("buying-questions", False, 0),
        ("service-care", False, 0),
    ]


# -- reply sent --------------------------------------------------------------------------------


def test_reply_sent_is_recorded_once_per_request(client, svc) -> None:
    signed_in(client, "sh_a")
    assert _reply(client).status_code == 204
    assert _reply(client).status_code == 204  # the client retried the same request
    [sent] = _sent(svc)
    assert (sent.advisor_userid, sent.external_userid, sent.dealer_code) == ("sh_a", "wm_wang", "SH01")
    assert sent.payload == {
        "card": "buying-questions",
        "version": 1,
        "step": 1,
        "reply_index": 0,
        "type": "text",
    }
    assert _reply(client, request_id="req-2", reply_index=1).status_code == 204
    assert [s.payload["type"] for s in _sent(svc)] == ["text", "miniprogram"]
    assert _reply(client, request_id="req-3").status_code == 204  # the same reply sent again later
    assert len(_sent(svc)) == 3


def test_reply_sent_header_request_id(client, svc) -> None:
    signed_in(client, "sh_a")
    body = {"external_userid": "wm_wang", "card_id": "buying-questions", "step": 0, "reply_index": 1}
    for _ in range(2):
        response = client.post("/sidebar/api/replies", json=body, headers={"X-Request-Id": "abc"})
        assert response.status_code == 204
    assert [s.payload["type"] for s in _sent(svc)] == ["link"]


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"reply_index": 9}, 404),
        ({"step": 5}, 404),
        ({"card_id": "service-care"}, 404),  # 王建国 is not in that card
        ({"card_id": ""}, 400),
        ({"step": -1}, 400),
        ({"step": "1"}, 400),
        ({"request_id": ""}, 400),
        ({"request_id": "x" * 65}, 400),
        ({"external_userid": "wm_liu"}, 403),
    ],
)
def test_reply_sent_refuses(client, svc, changes, status) -> None:
    response = _reply(signed_in(client, "sh_a"), **changes)
    assert response.status_code == status, response.json
    assert "message" in response.json
    assert _sent(svc) == []


def test_reply_sent_wants_json(client) -> None:
    signed_in(client, "sh_a")
    assert client.post("/sidebar/api/replies", data="step=1").status_code == 415
    assert client.post("/sidebar/api/replies", json=[1, 2]).status_code == 400

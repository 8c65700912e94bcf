"""GET /api/contact-way: the engine's advisor for a landing-page view and that advisor's QR code,
made once by a worker through add_contact_way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import responses
from rq.job import Job
from sqlalchemy import func, select

from app.api import contact_way as view
from app.intake import contact_ways
from app.store.models import ContactWay, Effect
from tests.intake.test_leads import seed_roster
from workers.contact_way_jobs import create_contact_way
from workers.queues import HIGH, queue

AUTH = {"Authorization": "Bearer sandbox-hq-token"}
API = "https://qyapi.weixin.qq.com/cgi-bin/"
QR = "https://wework.qpic.cn/wwpic/qr-1.png"


@pytest.fixture()
def roster(svc) -> None:
    seed_roster(svc)


@pytest.fixture()
def wecom_http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(API + "gettoken", json={"errcode": 0, "access_token": "TOKEN", "expires_in": 7200})
        mock.post(
            API + "externalcontact/add_contact_way",
            json={"errcode": 0, "errmsg": "ok", "config_id": "CFG-1", "qr_code": QR},
        )
        yield mock


@pytest.fixture()
def short_wait(monkeypatch) -> None:
    monkeypatch.setattr(view, "WAIT_SECONDS", 0.3)


def add_calls(http: responses.RequestsMock) -> list[dict]:
    return [json.loads(c.request.body) for c in http.calls if "add_contact_way" in c.request.url]


def store(svc, advisor: str, state: str, config_id: str = "CFG-0") -> None:
    with svc.sessions.begin() as session:
        session.add(
            ContactWay(
                advisor_userid=advisor,
                state=state,
                config_id=config_id,
                qr_code=QR,
                created_at=svc.clock.now(),
            )
        )


def test_a_stored_code_is_answered_at_once(client, svc, roster) -> None:
    store(svc, "zhang.wei", "lp.SH01.RAV4")
    response = client.get("/api/contact-way?dealer=SH01&model=RAV4", headers=AUTH)
    assert response.status_code == 200
    data = response.json
    assert data["advisor"] == {"userid": "zhang.wei", "name": "张伟"}
    assert (data["dealer"], data["state"], data["config_id"], data["qr_code"]) == (
        "SH01",
        "lp.SH01.RAV4",
        "CFG-0",
        QR,
    )
    assert data["explanation"]["chosen"]["advisor"] == "zhang.wei"
    assert data["explanation"]["chosen"]["breakdown"]["model"] == 3.0
    assert queue(HIGH, svc.redis).count == 0


def test_channel_and_a_city_instead_of_a_dealer(client, svc, roster) -> None:
    store(svc, "wang.fang", "qr.-.BZ4X")
    response = client.get("/api/contact-way?city=杭州&model=bz4x&channel=qr", headers=AUTH)
    assert response.status_code == 200
    assert (response.json["advisor"]["userid"], response.json["dealer"]) == ("wang.fang", "HZ01")
    assert response.json["state"] == "qr.-.BZ4X"


def test_the_first_request_waits_for_the_worker(app, client, svc, roster, wecom_http) -> None:
    jid = contact_ways.job_id("zhang.wei", "lp.SH01.RAV4")

    def worker() -> None:  # what a worker does with the job once it is queued
        deadline = time.monotonic() + 2
        while not Job.exists(jid, svc.redis) and time.monotonic() < deadline:
            time.sleep(0.01)
        with app.app_context():
            create_contact_way("zhang.wei", "lp.SH01.RAV4")

    thread = threading.Thread(target=worker)
    thread.start()
    response = client.get("/api/contact-way?dealer=SH01&model=RAV4", headers=AUTH)
    thread.join()
    assert response.status_code == 200
    assert (response.json["config_id"], response.json["qr_code"]) == ("CFG-1", QR)
    assert add_calls(wecom_http) == [
        {
            "type": 1,
            "scene": 2,
            "user": ["zhang.wei"],
            "state": "lp.SH01.RAV4",
            "remark": "dealer-scrm",
            "skip_verify": True,
        }
    ]


def test_pending_until_a_worker_runs_the_job(client, svc, roster, wecom_http, short_wait, work) -> None:
    started = time.monotonic()
    response = client.get("/api/contact-way?dealer=SH01&model=RAV4", headers=AUTH)
    assert 0.3 <= time.monotonic() - started < 2
    assert response.status_code == 202
    assert response.json == {"status": "pending", "retry_after": 1}
    assert response.headers["Retry-After"] == "1"
    # Concurrent views share one job.
    assert client.get("/api/contact-way?dealer=SH01&model=RAV4", headers=AUTH).status_code == 202
    jobs = queue(HIGH, svc.redis).jobs
    assert [(j.func_name, j.args) for j in jobs] == [
        ("workers.contact_way_jobs.create_contact_way", ["zhang.wei", "lp.SH01.RAV4"])
    ]
    assert jobs[0].id == contact_ways.job_id("zhang.wei", "lp.SH01.RAV4")
    assert add_calls(wecom_http) == []  # the web process never calls WeCom

    work()
    response = client.get("/api/contact-way?dealer=SH01&model=RAV4", headers=AUTH)
    assert response.status_code == 200
    assert response.json["config_id"] == "CFG-1"
    assert len(add_calls(wecom_http)) == 1


def test_the_job_makes_one_code_per_advisor_and_state(app, svc, roster, wecom_http) -> None:
    with app.app_context():
        assert create_contact_way("zhang.wei", "lp.SH01.RAV4") == "CFG-1"
        assert create_contact_way("zhang.wei", "lp.SH01.RAV4") == "CFG-1"  # stored: WeCom not asked
    assert len(add_calls(wecom_http)) == 1
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ContactWay)) == 1


def test_a_run_that_died_before_storing_reuses_the_first_config_id(app, svc, roster, wecom_http) -> None:
    with svc.sessions.begin() as session:
        session.add(
            Effect(
                key="contact-way:zhang.wei:lp.SH01.RAV4",
                result={"config_id": "CFG-FIRST", "qr_code": QR},
                created_at=svc.clock.now(),
            )
        )
    with app.app_context():
        assert create_contact_way("zhang.wei", "lp.SH01.RAV4") == "CFG-FIRST"
    assert add_calls(wecom_http) == []
    with svc.sessions() as session:
        assert session.scalar(select(ContactWay.config_id)) == "CFG-FIRST"


def test_job_ids_are_valid_for_rq_and_distinct() -> None:
    a = contact_ways.job_id("zhang.wei", "lp.SH01.RAV4")
    b = contact_ways.job_id("zhang_wei", "lp_SH01_RAV4")
    assert a.startswith("contact-way-zhang_wei-lp_SH01_RAV4-") and a != b
    assert all(c.isalnum() or c in "_-" for c in a)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("model=RAV4", "dealer is required (or city, to let the engine pick the dealer)"),
        ("dealer=XX99&model=RAV4", "unknown dealer 'XX99'"),
        ("dealer=SH01&model=SUPRA", "unknown model 'SUPRA': no dealer sells it"),
        ("city=拉萨&model=RAV4", "unknown city '拉萨': no dealer serves it"),
        ("dealer=SH01&channel=ld", "channel must be one of qr, rc, ad, lp (got 'ld')"),
        ("dealer=SH01&channel=zz", "channel must be one of qr, rc, ad, lp (got 'zz')"),
    ],
)
def test_bad_requests_are_400(client, svc, roster, query, message) -> None:
    response = client.get(f"/api/contact-way?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.json == {"error": "bad_request", "message": message}
    assert queue(HIGH, svc.redis).count == 0


def test_no_advisor_in_the_territory_is_409(client, svc, roster) -> None:
    response = client.get("/api/contact-way?dealer=BJ01&model=CAMRY", headers=AUTH)
    assert response.status_code == 409
    assert (
        response.json["message"] == "no advisor can take a customer now: no eligible advisor in the territory"
    )


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_requires_the_hq_token(client, svc, headers) -> None:
    response = client.get("/api/contact-way?dealer=SH01", headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"

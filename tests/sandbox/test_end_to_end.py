"""The sandbox and our app on real sockets: the sandbox delivers callbacks to /wecom/callback and
/wecom/bot of the SCRM app, which stores them in its inbox (dedup collapses a re-delivery)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import select
from werkzeug.serving import make_server

from app.sandbox import SandboxConfig, SandboxServer, run_sandbox
from app.store import inbox
from app.store.models import InboxEvent


@pytest.fixture()
def app_url(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture()
def live(app_url: str) -> Iterator[SandboxServer]:
    config = SandboxConfig(
        callback_url=app_url + "/wecom/callback", bot_callback_url=app_url + "/wecom/bot", retry_delay=0.05
    )
    with run_sandbox(config) as server:
        answer = requests.post(
            server.url + "/sandbox/seed",
            json={
                "employees": [{"userid": "zhangsan", "name": "张三"}],
                "contact_ways": [{"state": "dealer_a", "user": ["zhangsan"]}],
            },
            timeout=5,
        )
        assert answer.status_code == 200
        yield server


def test_add_external_contact_reaches_the_inbox(live: SandboxServer, svc) -> None:
    config_id = next(iter(live.state.contact_ways))
    answer = requests.post(
        live.url + "/sandbox/platform/customer_adds", json={"config_id": config_id}, timeout=10
    )
    assert answer.status_code == 200
    delivered = answer.json()
    assert delivered["delivery"]["outcome"] == "acknowledged"
    [attempt] = delivered["delivery"]["attempts"]
    assert (attempt["status"], attempt["response_body"]) == (200, "success")

    with svc.sessions() as session:
        assert inbox.status_counts(session)["received"] == 1
        assert inbox.delivery_totals(session) == (1, 1)
        row = session.scalars(select(InboxEvent)).one()
    assert row.event_type == "change_external_contact:add_external_contact"
    assert delivered["external_userid"] in row.plaintext
    assert "<State><![CDATA[dealer_a]]></State>" in row.plaintext


def test_a_lost_answer_is_one_row_with_two_deliveries(live: SandboxServer, svc) -> None:
    emission = live.platform.customer_adds(userid="zhangsan", state="walk_in", duplicate=True)
    report = emission.report()
    assert [a.status for a in report.attempts] == [200, 200]
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (1, 2)
        row = session.scalars(select(InboxEvent)).one()
    assert row.deliveries == 2
    assert row.plaintext == emission.plaintext
    assert live.state.delivery_log.snapshot()["duplicates_sent"] == 1


def test_advisor_text_reaches_the_bot_endpoint(live: SandboxServer, svc) -> None:
    report = live.platform.advisor_texts_bot("zhangsan", "报价").report()
    assert report.acknowledged
    with svc.sessions() as session:
        row = session.scalars(select(InboxEvent)).one()
    assert (row.source, row.event_type) == ("bot", "msg:text")


def test_burst_through_the_pool(live: SandboxServer, svc) -> None:
    config_id = next(iter(live.state.contact_ways))
    for _ in range(30):
        live.platform.customer_adds(config_id=config_id, wait=False)
    assert live.platform.drain(timeout=60)
    counters = live.state.delivery_log.snapshot()
    assert counters["deliveries_acknowledged"] == 30
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (30, 30)


def test_url_verification_get_is_answered_by_the_app(live: SandboxServer) -> None:
    for target in ("contact", "bot"):
        answer = requests.post(
            live.url + "/sandbox/platform/verify_callback_url", json={"target": target}, timeout=10
        ).json()
        assert answer["verified"] is True, answer
    live.state.configure(token="not-the-apps-token")
    assert live.platform.verify_callback_url()["verified"] is False

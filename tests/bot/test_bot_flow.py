"""The bot end to end: the sandbox plays WeCom (an advisor texts the bot; message/send), our app
on a real socket answers /wecom/bot, a worker thread (or a later burst worker) handles the
message. The passive reply is decrypted the way WeCom would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import select
from werkzeug.serving import make_server

from app.bot import reply
from app.redis_client import connect
from app.sandbox import SandboxConfig, SandboxServer, events, run_sandbox
from app.store.models import InboxEvent, InboxStatus, Interaction
from tests.bot import seed
from tests.bot.seed import WorkerThread
from workers.queues import enqueue_event
from workers.relay import pending_notices

WAIT = 1.5


@pytest.fixture()
def wecom() -> Iterator[SandboxServer]:
    with run_sandbox(SandboxConfig(seed=5, retry_delay=0.05)) as server:
        yield server


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom: SandboxServer) -> dict[str, Any]:
    return {**app_config, "WECOM_API_BASE": wecom.api_base, "BOT_PASSIVE_REPLY_WAIT": WAIT}


@pytest.fixture()
def corp(app, svc, wecom: SandboxServer) -> Iterator[SandboxServer]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    wecom.state.configure(bot_callback_url=f"http://127.0.0.1:{server.port}/wecom/bot")
    for userid, name in seed.ADVISORS.items():
        wecom.state.add_employee(userid, name)
    seed.corp(svc)
    yield wecom
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture()
def worker(app) -> Iterator[WorkerThread]:
    with WorkerThread(app) as running:
        yield running


def _answered(svc) -> list[Interaction]:
    with svc.sessions() as session:
        return list(session.scalars(select(Interaction).where(Interaction.kind == "bot_answered")))


def _row(svc) -> InboxEvent:
    with svc.sessions() as session:
        return session.scalars(select(InboxEvent)).one()


def _sent_to(corp: SandboxServer, userid: str) -> list[Any]:
    """The bot's text messages to ``userid`` (SOP reminders go out as text cards)."""
    return [m for m in corp.state.app_messages if m.touser == [userid] and m.msgtype == "text"]


def test_the_answer_comes_back_as_the_passive_reply(corp: SandboxServer, svc, worker) -> None:
    started = time.perf_counter()
    emission = corp.platform.advisor_texts_bot("sh_a", "保养多少钱")
    elapsed = time.perf_counter() - started
    report = emission.report()
    plaintext = corp.sandbox.deliverer.open_reply(report)
    assert plaintext is not None, report.attempts[-1].response_body
    assert "<ToUserName><![CDATA[sh_a]]></ToUserName>" in plaintext
    assert f"<FromUserName><![CDATA[{svc.settings.WECOM_CORP_ID}]]></FromUserName>" in plaintext
    assert "<MsgType><![CDATA[text]]></MsgType>" in plaintext
    assert "① 问答「保养/价格」：常规小保养约 600-900 元" in plaintext
    assert elapsed < WAIT  # answered as soon as the worker had it, not at the end of the wait
    assert _sent_to(corp, "sh_a") == []  # no app message as well

    deadline = time.monotonic() + 5
    while _row(svc).status != InboxStatus.DONE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _row(svc).status == InboxStatus.DONE
    [answered] = _answered(svc)
    assert (answered.advisor_userid, answered.external_userid, answered.dealer_code) == ("sh_a", None, "SH01")
    assert answered.payload["query"] == "保养多少钱"
    assert answered.payload["via"] == "passive"
    assert answered.payload["hits"][0] == {"card": "service-care", "step": 0, "kind": "qa", "index": 0}


def test_without_a_worker_the_callback_says_success_and_the_answer_is_sent_later(
    corp: SandboxServer, svc, work
) -> None:
    started = time.perf_counter()
    report = corp.platform.advisor_texts_bot("sh_a", "王建国 试驾").report()
    elapsed = time.perf_counter() - started
    assert report.attempts[-1].response_body == "success"
    assert corp.sandbox.deliverer.open_reply(report) is None
    assert WAIT <= elapsed < WAIT + 1.0  # waited, then gave up well inside WeCom's 5 s
    assert pending_notices(svc.redis)["high"] == 1  # an advisor's text is urgent

    work()
    [message] = _sent_to(corp, "sh_a")
    assert message.msgtype == "text"
    assert message.content["content"].startswith("客户：王建国 · 购车咨询 第2步\n① 问答「试驾/试车」")
    [answered] = _answered(svc)
    assert answered.external_userid == "wm_wang" and answered.payload["via"] == "active"


def test_a_duplicate_delivery_gets_one_answer(corp: SandboxServer, svc, worker) -> None:
    report = corp.platform.advisor_texts_bot("sh_a", "落地价", duplicate=True).report()
    assert [a.status for a in report.attempts] == [200, 200]
    bodies = [a.response_body for a in report.attempts]
    assert bodies[0].startswith("<xml>") and bodies[1] == "success"
    time.sleep(0.3)
    assert _row(svc).deliveries == 2
    assert worker.ran == 1
    assert len(_answered(svc)) == 1
    assert _sent_to(corp, "sh_a") == []


def test_a_duplicate_with_no_worker_is_answered_once_by_message(corp: SandboxServer, svc, work) -> None:
    report = corp.platform.advisor_texts_bot("sh_a", "落地价", duplicate=True).report()
    assert [a.response_body for a in report.attempts] == ["success", "success"]
    work()
    work()
    assert len(_sent_to(corp, "sh_a")) == 1
    assert len(_answered(svc)) == 1


def test_a_retried_job_does_not_answer_again(corp: SandboxServer, svc, work) -> None:
    corp.platform.advisor_texts_bot("sh_a", "落地价").report()
    work()
    row = _row(svc)
    enqueue_event(svc.redis, svc.settings, row.id, row.job_generation + 1)
    with svc.sessions.begin() as session:  # as if the first run died after sending
        session.get(InboxEvent, row.id).status = InboxStatus.RECEIVED
    work()
    assert len(_sent_to(corp, "sh_a")) == 1
    assert len(_answered(svc)) == 1


def test_redis_down_for_the_callback_means_success_and_an_app_message(
    corp: SandboxServer, svc, work, monkeypatch
) -> None:
    svc.__dict__["web_redis"] = connect("redis://127.0.0.1:1/0", fail_fast=True)  # nobody listens there
    started = time.perf_counter()
    report = corp.platform.advisor_texts_bot("sh_a", "试驾").report()
    assert report.attempts[-1].response_body == "success"
    assert time.perf_counter() - started < 1.0  # no waiting on a dead Redis
    assert svc.enqueue_paused_until > svc.clock.time()  # the ingester skips Redis for a moment
    row = _row(svc)
    assert row.status == InboxStatus.RECEIVED  # stored; the sweeper enqueues it later
    enqueue_event(svc.redis, svc.settings, row.id, row.job_generation)
    work()
    assert len(_sent_to(corp, "sh_a")) == 1
    assert _answered(svc)[0].payload["via"] == "active"


def test_a_worker_that_answers_after_the_wait_sends_a_message(
    corp: SandboxServer, svc, app, monkeypatch
) -> None:
    real_deliver = reply.deliver

    def slow_deliver(*args, **kwargs):
        time.sleep(WAIT + 0.3)  # the view has given up by now
        return real_deliver(*args, **kwargs)

    monkeypatch.setattr(reply, "deliver", slow_deliver)
    with WorkerThread(app):
        report = corp.platform.advisor_texts_bot("sh_a", "试驾").report()
        assert report.attempts[-1].response_body == "success"
        deadline = time.monotonic() + 5
        while not _sent_to(corp, "sh_a") and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(_sent_to(corp, "sh_a")) == 1
    assert _answered(svc)[0].payload["via"] == "active"


def test_waiting_off_answers_success_at_once(corp: SandboxServer, svc, work, monkeypatch) -> None:
    monkeypatch.setattr(svc, "settings", svc.settings.model_copy(update={"BOT_PASSIVE_REPLY_WAIT": 0.0}))
    started = time.perf_counter()
    report = corp.platform.advisor_texts_bot("sh_a", "试驾").report()
    assert report.attempts[-1].response_body == "success"
    assert time.perf_counter() - started < 0.5
    work()
    assert len(_sent_to(corp, "sh_a")) == 1


def test_two_deliveries_at_once_get_one_answer(corp: SandboxServer, svc, worker) -> None:
    """WeCom re-delivering while the first delivery still waits: one job, one answer."""
    cfg = corp.state.config
    plaintext = events.app_text_message(cfg.corp_id, "sh_a", 1795485600, "落地价", 8123456789, cfg.agent_id)
    crypto = corp.sandbox.deliverer.crypto("bot")

    def deliver(nonce: str) -> str:
        signature, body = crypto.seal_callback(plaintext, "1795485600", nonce, str(cfg.agent_id))
        query = {"msg_signature": signature, "timestamp": "1795485600", "nonce": nonce}
        return requests.post(cfg.bot_callback_url, params=query, data=body.encode(), timeout=5).text

    with ThreadPoolExecutor(2) as pool:
        bodies = list(pool.map(deliver, ["111", "222"]))
    deadline = time.monotonic() + 5
    while _row(svc).status != InboxStatus.DONE and time.monotonic() < deadline:
        time.sleep(0.05)
    passive = [b for b in bodies if b.startswith("<xml>")]
    assert len(passive) + len(_sent_to(corp, "sh_a")) == 1, bodies
    assert len(_answered(svc)) == 1 and _row(svc).deliveries == 2


def test_views_beyond_the_waiting_slots_answer_success_at_once(
    corp: SandboxServer, svc, work, monkeypatch
) -> None:
    """With one waiting slot per process, a second advisor's text that arrives while the first
    waits is answered "success" at once; both answers go out, the second as an app message; the
    slot is free again afterwards."""
    monkeypatch.setattr(svc, "settings", svc.settings.model_copy(update={"BOT_PASSIVE_REPLY_MAX_WAITERS": 1}))

    def text(userid: str, content: str) -> tuple[str, float]:
        started = time.perf_counter()
        report = corp.platform.advisor_texts_bot(userid, content).report()
        return report.attempts[-1].response_body, time.perf_counter() - started

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(text, "sh_a", "保养多少钱")
        time.sleep(0.3)  # the first view is waiting now
        second = pool.submit(text, "sh_b", "落地价")
        (body_a, waited_a), (body_b, waited_b) = first.result(), second.result()
    assert (body_a, body_b) == ("success", "success")  # no worker runs: nobody answers in time
    assert waited_a >= WAIT
    assert waited_b < WAIT / 2  # did not wait: the only slot was taken

    work()
    assert len(_sent_to(corp, "sh_a")) == 1 and len(_sent_to(corp, "sh_b")) == 1
    assert sorted(a.payload["via"] for a in _answered(svc)) == ["active", "active"]

    _, waited_again = text("sh_a", "试驾")  # the slot was given back
    assert waited_again >= WAIT

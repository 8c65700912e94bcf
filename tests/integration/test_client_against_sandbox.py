"""Our WeCom client against the local WeCom sandbox, over real HTTP, sharing one frozen clock:
the two halves of the project agree on WeCom's rules."""

from __future__ import annotations

import pytest

from app import create_app
from app.sandbox import SandboxConfig, run_sandbox
from app.wecom.client import agent_client, contact_client
from app.wecom.errors import WeComError, WeComUnavailable


@pytest.fixture()
def sandbox(clock):
    server = run_sandbox(SandboxConfig(rate_limits={"externalcontact/list": 3}, seed=7), clock=clock)
    server.state.add_employee("advisor01", "王磊")
    yield server
    server.stop()


@pytest.fixture()
def wecom_app(app_config, clean_state, sandbox):
    application = create_app(
        {**app_config, "WECOM_API_BASE": sandbox.api_base, "WECOM_RATE_LIMIT_MAX_WAIT": 120}
    )
    yield application
    application.extensions["scrm"].close()


def _customer(sandbox, **kwargs):
    emission = sandbox.platform.customer_adds(
        userid="advisor01", state="qr.SH01.RAV4", name="李女士", **kwargs
    )
    return emission.data


def test_the_customer_the_platform_added_is_readable(wecom_app, sandbox) -> None:
    data = _customer(sandbox)
    client = contact_client(wecom_app.extensions["scrm"])
    contact = client.external_contact.get(data["external_userid"])
    assert contact["external_contact"]["name"] == "李女士"
    assert contact["follow_user"][0]["userid"] == "advisor01"
    assert contact["follow_user"][0]["state"] == "qr.SH01.RAV4"
    assert sandbox.state.stats()["api_calls"].get("gettoken") == 1


def test_a_welcome_code_works_once_then_41051_and_expires_after_20_s(wecom_app, sandbox, clock) -> None:
    client = contact_client(wecom_app.extensions["scrm"])
    code = _customer(sandbox)["welcome_code"]
    client.external_contact.send_welcome_msg({"welcome_code": code, "text": {"content": "您好，我是王磊"}})
    with pytest.raises(WeComError) as used:
        client.external_contact.send_welcome_msg({"welcome_code": code, "text": {"content": "again"}})
    assert used.value.errcode == 41051

    late = _customer(sandbox)["welcome_code"]
    clock.advance(21)
    with pytest.raises(WeComError) as expired:
        client.external_contact.send_welcome_msg({"welcome_code": late, "text": {"content": "too late"}})
    assert expired.value.errcode == 41050
    assert len(sandbox.state.welcome_messages) == 1


def test_a_token_the_platform_revoked_is_refreshed_once(wecom_app, sandbox) -> None:
    client = contact_client(wecom_app.extensions["scrm"])
    data = _customer(sandbox)
    client.external_contact.get(data["external_userid"])
    sandbox.state.invalidate_tokens()
    client.external_contact.get(data["external_userid"])  # 40014 → one new token → success
    stats = sandbox.state.stats()
    assert stats["api_calls"]["gettoken"] == 2
    assert stats["errors"].get("40014") == 1


def test_a_token_that_expired_on_the_platform_clock_is_refreshed(wecom_app, sandbox, clock) -> None:
    client = contact_client(wecom_app.extensions["scrm"])
    data = _customer(sandbox)
    client.external_contact.get(data["external_userid"])
    clock.advance(7201)  # the platform's token is dead; our Redis copy lives in real time
    client.external_contact.get(data["external_userid"])
    stats = sandbox.state.stats()
    assert stats["errors"].get("42001") == 1 and stats["api_calls"]["gettoken"] == 2


def test_platform_rate_limit_45009_ends_in_a_retryable_error_then_recovers(wecom_app, sandbox, clock) -> None:
    # Our own limiter allows more than the platform here, so the platform's 45009 is what we meet.
    client = contact_client(wecom_app.extensions["scrm"])
    for _ in range(3):
        client.external_contact.list("advisor01")
    # WeCom blocks the API for the rest of its minute: a few seconds of backoff cannot outlast that,
    # so the call ends in a retryable error and the job's RQ Retry runs it again later.
    with pytest.raises(WeComUnavailable) as blocked:
        client.external_contact.list("advisor01")
    assert blocked.value.retryable and blocked.value.errcode == 45009
    clock.advance(60)
    assert client.external_contact.list("advisor01")["errcode"] == 0


def test_system_busy_then_recovery_and_a_persistent_outage(wecom_app, sandbox) -> None:
    client = contact_client(wecom_app.extensions["scrm"])
    data = _customer(sandbox)
    sandbox.state.faults.add({"path": "externalcontact/get", "errcode": -1, "times": 2})
    assert client.external_contact.get(data["external_userid"])["errcode"] == 0
    sandbox.state.faults.add({"path": "externalcontact/get", "http_status": 502, "times": 50})
    with pytest.raises(WeComUnavailable):
        client.external_contact.get(data["external_userid"])


def test_app_messages_go_through_the_agent_app(wecom_app, sandbox) -> None:
    client = agent_client(wecom_app.extensions["scrm"])
    result = client.message.send_text(
        int(wecom_app.extensions["scrm"].settings.WECOM_AGENT_ID), "advisor01", "新客户：李女士"
    )
    assert result["errcode"] == 0
    sent = sandbox.state.app_messages[-1]
    assert sent.touser == ["advisor01"] and sent.msgtype == "text"

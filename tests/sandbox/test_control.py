"""The /sandbox/ control API, the live server's clock, and the `scrm sandbox` command."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from click.testing import CliRunner

from app.clock import FrozenClock, OffsetClock
from app.sandbox import Sandbox, run_sandbox
from app.sandbox.server import redact
from tests.sandbox.conftest import WeComApi


def test_platform_actions_and_read_back(control, corp: dict[str, Any], wecom_api: WeComApi) -> None:
    added = control.post("/sandbox/platform/customer_adds", json={"config_id": corp["config_id"]}).json
    assert added["event_type"] == "change_external_contact:add_external_contact"
    assert added["delivery"]["outcome"] == "no_callback_url"
    ext = added["external_userid"]
    wecom_api.post(
        "externalcontact/send_welcome_msg", {"welcome_code": added["welcome_code"], "text": {"content": "hi"}}
    )
    edited = control.post(
        "/sandbox/platform/advisor_edits_customer",
        json={"userid": "zhangsan", "external_userid": ext, "remark": "王总"},
    ).json
    assert edited["event_type"] == "change_external_contact:edit_external_contact"

    [customer] = control.get("/sandbox/customers").json
    assert customer["follow_user"][0]["remark"] == "王总"
    [welcome] = control.get("/sandbox/welcome_messages").json
    assert (welcome["external_userid"], welcome["text"]) == (ext, "hi")
    stats = control.get("/sandbox/stats").json
    assert stats["deliveries"]["events_emitted"] == 2
    assert stats["api_calls"] == {"gettoken": 1, "externalcontact/send_welcome_msg": 1}
    assert [d["event_type"] for d in control.get("/sandbox/deliveries?limit=1").json] == [
        "change_external_contact:edit_external_contact"
    ]


def test_bad_control_requests_say_why(control, corp: dict[str, Any]) -> None:
    unknown = control.post("/sandbox/platform/customer_adds", json={"config_id": "nope"})
    assert unknown.status_code == 400 and "unknown contact way" in unknown.json["error"]
    assert control.post("/sandbox/platform/format_disk", json={}).status_code == 400
    assert control.post("/sandbox/platform/customer_adds", json={"colour": "red"}).status_code == 400
    assert control.post("/sandbox/config", json={"rate_limit_per_minute": 0}).status_code == 400
    assert control.post("/sandbox/config", json={"no_such_setting": 1}).status_code == 400
    long_state = control.post("/sandbox/contact_ways", json={"state": "x" * 31, "user": ["zhangsan"]})
    assert long_state.status_code == 400 and long_state.json["errcode"] == 40058
    assert control.post("/sandbox/seed", json={"employee": []}).status_code == 400


def test_config_hides_secrets_and_reset_empties_the_corp(
    control, corp: dict[str, Any], sandbox: Sandbox
) -> None:
    shown = control.get("/sandbox/config").json
    assert "contact_secret" not in shown and "aes_key" not in shown
    assert shown["welcome_code_ttl"] == 20
    control.post("/sandbox/config", json={"retry_delay": 0.5})
    assert control.post("/sandbox/reset", json={}).json == {"ok": True}
    assert control.get("/sandbox/stats").json["employees"] == 0
    assert sandbox.state.config.retry_delay == 0.5  # kept unless keep_config is false
    control.post("/sandbox/reset", json={"keep_config": False})
    assert sandbox.state.config.retry_delay == 1.0


def test_seeded_ids_repeat_after_reset(control, sandbox: Sandbox) -> None:
    def seed() -> str:
        control.post("/sandbox/employees", json={"userid": "zhangsan", "name": "张三"})
        return sandbox.platform.customer_adds(userid="zhangsan").data["external_userid"]

    first = seed()
    control.post("/sandbox/reset")
    assert seed() == first


def test_advance_moves_the_frozen_clock(control, clock: FrozenClock) -> None:
    before = clock.time()
    assert control.post("/sandbox/clock/advance", json={"seconds": 21}).json["time"] == before + 21
    assert control.post("/sandbox/clock/advance", json={"seconds": -1}).status_code == 400


def test_offset_clock_runs_in_real_time_and_only_forward() -> None:
    clock = OffsetClock()
    start = clock.time()
    clock.advance(3600)
    assert 3600 <= clock.time() - start < 3605
    clock.advance(-100)
    assert clock.time() - start >= 3600
    assert abs(clock.now().timestamp() - clock.time()) < 1


def test_live_server_expires_welcome_codes_when_time_is_advanced() -> None:
    with run_sandbox() as server:
        assert isinstance(server.state.clock, OffsetClock)
        requests.post(
            server.url + "/sandbox/employees", json={"userid": "zhangsan", "name": "张三"}, timeout=5
        )
        code = server.platform.customer_adds(userid="zhangsan").data["welcome_code"]
        token = requests.get(
            server.api_base + "gettoken",
            params={"corpid": server.state.config.corp_id, "corpsecret": server.state.config.contact_secret},
            timeout=5,
        ).json()["access_token"]
        requests.post(server.url + "/sandbox/clock/advance", json={"seconds": 20}, timeout=5)
        answer = requests.post(
            server.api_base + "externalcontact/send_welcome_msg",
            params={"access_token": token},
            json={"welcome_code": code, "text": {"content": "hi"}},
            timeout=5,
        ).json()
        assert answer["errcode"] == 41050


def test_request_logs_hide_tokens_and_secrets() -> None:
    line = "GET /cgi-bin/gettoken?corpid=wx1&corpsecret=s3cret HTTP/1.1"
    assert redact(line) == "GET /cgi-bin/gettoken?corpid=wx1&corpsecret=*** HTTP/1.1"
    assert (
        redact("/cgi-bin/user/get?access_token=abc&userid=x") == "/cgi-bin/user/get?access_token=***&userid=x"
    )


def test_cli_builds_the_sandbox_without_any_scrm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import cli
    from app.sandbox import server as server_module

    seen: dict[str, Any] = {}

    class FakeServer:
        host, port = "127.0.0.1", 8901

        def serve_forever(self) -> None:
            raise KeyboardInterrupt

        def server_close(self) -> None:
            seen["closed"] = True

    def fake_serve(app, host: str, port: int, log_requests: bool = False) -> FakeServer:
        seen.update(config=app.extensions["sandbox"].state.config, host=host, port=port, log=log_requests)
        return FakeServer()

    monkeypatch.setattr(server_module, "serve", fake_serve)
    for name in ("DATABASE_URL", "REDIS_URL", "SCRM_MODE", "WECOM_CORP_ID"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(
        cli,
        [
            "sandbox",
            "--port",
            "8901",
            "--callback-url",
            "http://127.0.0.1:5000/wecom/callback",
            "--rate-limit",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8901" in result.output
    config = seen["config"]
    assert (seen["host"], seen["port"], seen["log"], seen["closed"]) == ("127.0.0.1", 8901, True, True)
    assert config.callback_url == "http://127.0.0.1:5000/wecom/callback"
    assert config.rate_limit_per_minute == 50
    assert config.bot_callback_url is None

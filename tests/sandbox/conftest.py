"""Sandbox fixtures: the sandbox app on a FrozenClock (the shared ``clock`` fixture) behind Flask's
test client, a WeCom API client for it, and a standard seeded corp."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app.clock import FrozenClock
from app.config import SANDBOX_CREDENTIALS
from app.sandbox import Sandbox, SandboxConfig, create_sandbox_app

CORP_ID = SANDBOX_CREDENTIALS["WECOM_CORP_ID"]
SECRETS = {
    "contact": SANDBOX_CREDENTIALS["WECOM_CONTACT_SECRET"],
    "agent": SANDBOX_CREDENTIALS["WECOM_AGENT_SECRET"],
}
AGENT_ID = int(SANDBOX_CREDENTIALS["WECOM_AGENT_ID"])


class WeComApi:
    """Calls the sandbox's /cgi-bin/ like a WeCom client would (token in the query string)."""

    def __init__(self, client, app: str = "contact") -> None:
        self.client = client
        self.app = app
        self._token: str | None = None

    def gettoken(self, corpid: str = CORP_ID, secret: str | None = None) -> dict[str, Any]:
        secret = SECRETS[self.app] if secret is None else secret
        return self.client.get(
            "/cgi-bin/gettoken", query_string={"corpid": corpid, "corpsecret": secret}
        ).json

    @property
    def token(self) -> str:
        if self._token is None:
            answer = self.gettoken()
            assert answer["errcode"] == 0, answer
            self._token = answer["access_token"]
        return self._token

    def get(self, path: str, token: str | None = None, **params: Any) -> dict[str, Any]:
        params["access_token"] = self.token if token is None else token
        return self.client.get(f"/cgi-bin/{path}", query_string=params).json

    def post(self, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
        query = {"access_token": self.token if token is None else token}
        return self.client.post(f"/cgi-bin/{path}", query_string=query, json=body or {}).json


@pytest.fixture()
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(seed=7)


@pytest.fixture()
def sandbox_app(sandbox_config: SandboxConfig, clock: FrozenClock) -> Iterator[Flask]:
    application = create_sandbox_app(sandbox_config, clock)
    yield application
    application.extensions["sandbox"].close()


@pytest.fixture()
def sandbox(sandbox_app: Flask) -> Sandbox:
    return sandbox_app.extensions["sandbox"]


@pytest.fixture()
def control(sandbox_app: Flask):
    return sandbox_app.test_client()


@pytest.fixture()
def wecom_api(sandbox_app: Flask) -> WeComApi:
    return WeComApi(sandbox_app.test_client(), "contact")


@pytest.fixture()
def agent_api(sandbox_app: Flask) -> WeComApi:
    return WeComApi(sandbox_app.test_client(), "agent")


@pytest.fixture()
def corp(control) -> dict[str, Any]:
    """Two advisors, a tag group and a contact way for zhangsan with state "dealer_a"."""
    answer = control.post(
        "/sandbox/seed",
        json={
            "employees": [
                {"userid": "zhangsan", "name": "张三", "department": [2], "mobile": "13800000001"},
                {"userid": "lisi", "name": "李四", "department": [2, 3]},
            ],
            "tag_groups": [{"group_name": "车型", "tags": ["SUV", "轿车"]}],
            "contact_ways": [{"state": "dealer_a", "user": ["zhangsan"]}],
        },
    )
    assert answer.status_code == 200, answer.json
    seeded = answer.json
    return {
        "tags": seeded["tag_groups"][0]["tags"],
        "group_id": seeded["tag_groups"][0]["group_id"],
        "config_id": seeded["contact_ways"][0]["config_id"],
    }

"""wechatpy 1.8.18 (the client the app is built on) against a live sandbox: the sandbox must
speak WeCom well enough for wechatpy's token handling and error mapping to work unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from wechatpy.enterprise import WeChatClient
from wechatpy.exceptions import APILimitedException, WeChatClientException

from app.sandbox import SandboxServer, run_sandbox
from tests.sandbox.conftest import CORP_ID, SECRETS


class SandboxClient(WeChatClient):
    """wechatpy's gettoken URL is fixed, so the sandbox's base replaces it here."""

    def fetch_access_token(self):
        return self._fetch_access_token(
            url=self.API_BASE_URL + "gettoken", params={"corpid": self.corp_id, "corpsecret": self.secret}
        )


@pytest.fixture()
def live() -> Iterator[SandboxServer]:
    with run_sandbox() as server:
        server.state.add_employee("zhangsan", "张三")
        yield server


def _client(server: SandboxServer) -> SandboxClient:
    client = SandboxClient(CORP_ID, SECRETS["contact"])
    client.API_BASE_URL = server.api_base
    return client


def test_wechatpy_reads_a_customer(live: SandboxServer) -> None:
    ext = live.platform.customer_adds(userid="zhangsan", state="s1", name="王先生").data["external_userid"]
    answer = _client(live).external_contact.get(ext)
    assert answer["external_contact"]["name"] == "王先生"
    assert answer["follow_user"][0]["state"] == "s1"


def test_wechatpy_refetches_after_42001_and_maps_errors(live: SandboxServer) -> None:
    client = _client(live)
    assert client.external_contact.get_follow_user_list()["follow_user"] == ["zhangsan"]
    first_token = client.access_token
    live.state.clock.advance(7200)  # type: ignore[attr-defined]
    # 42001 on the old token, one gettoken, then the call goes through with the new token.
    assert client.external_contact.get_follow_user_list()["follow_user"] == ["zhangsan"]
    assert client.access_token != first_token
    assert live.state.api_calls["gettoken"] == 2
    assert live.state.errors["42001"] == 1

    live.state.faults.add({"path": "externalcontact/get_follow_user_list", "errcode": -1, "times": 1})
    with pytest.raises(WeChatClientException) as busy:
        client.external_contact.get_follow_user_list()
    assert busy.value.errcode == -1
    live.state.configure(rate_limits={"externalcontact/get_follow_user_list": 1})
    live.state.clock.advance(60)  # type: ignore[attr-defined]  # a fresh one-minute window
    client.external_contact.get_follow_user_list()
    with pytest.raises(APILimitedException):
        client.external_contact.get_follow_user_list()

"""gettoken and the access-token check every other API makes."""

from __future__ import annotations

from app.clock import FrozenClock
from tests.sandbox.conftest import WeComApi


def test_gettoken_rejects_unknown_corp_and_wrong_secret(wecom_api: WeComApi) -> None:
    assert wecom_api.gettoken(corpid="ww_not_this_corp")["errcode"] == 40013
    wrong = wecom_api.gettoken(secret="not-the-secret")
    assert wrong["errcode"] == 40001
    assert "access_token" not in wrong
    assert wecom_api.gettoken(corpid="")["errcode"] == 41002
    assert wecom_api.gettoken(secret="")["errcode"] == 41004


def test_same_token_while_valid_and_per_app(
    wecom_api: WeComApi, agent_api: WeComApi, clock: FrozenClock
) -> None:
    first = wecom_api.gettoken()
    assert first == {"errcode": 0, "errmsg": "ok", "access_token": first["access_token"], "expires_in": 7200}
    clock.advance(100)
    again = wecom_api.gettoken()
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] == 7100  # what is left, so a client caching it never holds a dead token
    assert agent_api.gettoken()["access_token"] != first["access_token"]


def test_expired_token_answers_42001_then_a_new_token_works(wecom_api: WeComApi, clock: FrozenClock) -> None:
    old = wecom_api.token
    assert wecom_api.get("externalcontact/get_follow_user_list")["errcode"] == 0
    clock.advance(7200)
    expired = wecom_api.get("externalcontact/get_follow_user_list")
    assert expired["errcode"] == 42001
    assert expired["errmsg"].startswith("access_token expired")
    new = wecom_api.gettoken()
    assert new["errcode"] == 0
    assert new["access_token"] != old
    assert wecom_api.get("externalcontact/get_follow_user_list", token=new["access_token"])["errcode"] == 0


def test_missing_and_unknown_tokens(wecom_api: WeComApi) -> None:
    assert wecom_api.get("externalcontact/get_follow_user_list", token="")["errcode"] == 41001
    assert wecom_api.get("externalcontact/get_follow_user_list", token="forged")["errcode"] == 40014
    assert wecom_api.post("externalcontact/get_corp_tag_list", token="forged")["errcode"] == 40014


def test_token_ttl_is_configurable_and_revocation_answers_40014(
    wecom_api: WeComApi, control, clock: FrozenClock
) -> None:
    assert control.post("/sandbox/config", json={"token_ttl": 60}).json["token_ttl"] == 60
    answer = wecom_api.gettoken()
    assert answer["expires_in"] == 60
    clock.advance(61)
    assert wecom_api.get("user/get", token=answer["access_token"], userid="x")["errcode"] == 42001

    token = wecom_api.gettoken()["access_token"]
    assert control.post("/sandbox/tokens/invalidate").json == {"invalidated": 2}
    assert wecom_api.get("user/get", token=token, userid="x")["errcode"] == 40014

"""Customer-contact APIs: their answers and WeCom's validation errors."""

from __future__ import annotations

import re
from typing import Any

from app.clock import FrozenClock
from app.sandbox import Sandbox
from tests.sandbox.conftest import WeComApi


def _add(sandbox: Sandbox, **kwargs: Any) -> dict[str, Any]:
    return sandbox.platform.customer_adds(**kwargs).data


def test_customer_through_a_contact_way_is_visible_to_get(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock
) -> None:
    added = _add(sandbox, config_id=corp["config_id"], name="王先生")
    assert re.fullmatch(r"wm[A-Za-z0-9_-]{30}", added["external_userid"])
    assert added["userid"] == "zhangsan"
    assert added["state"] == "dealer_a"

    answer = wecom_api.get("externalcontact/get", external_userid=added["external_userid"])
    assert answer["errcode"] == 0 and answer["errmsg"] == "ok"
    assert answer["external_contact"]["name"] == "王先生"
    assert answer["external_contact"]["external_userid"] == added["external_userid"]
    [follow] = answer["follow_user"]
    assert follow["userid"] == "zhangsan"
    assert follow["state"] == "dealer_a"
    assert follow["createtime"] == int(clock.time())
    assert follow["tags"] == []

    assert wecom_api.get("externalcontact/list", userid="zhangsan")["external_userid"] == [
        added["external_userid"]
    ]
    assert wecom_api.get("externalcontact/list", userid="lisi")["external_userid"] == []
    assert wecom_api.get("externalcontact/list", userid="nobody")["errcode"] == 60111
    assert wecom_api.get("externalcontact/get_follow_user_list")["follow_user"] == ["lisi", "zhangsan"]


def test_get_unknown_customer_and_ended_relation(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any]
) -> None:
    assert wecom_api.get("externalcontact/get", external_userid="wmNoSuchCustomer")["errcode"] == 40096
    ext = _add(sandbox, userid="lisi", state="walk_in")["external_userid"]
    # A customer deleting the advisor keeps the relation on the advisor's side.
    sandbox.platform.customer_deletes_advisor("lisi", ext)
    assert wecom_api.get("externalcontact/get", external_userid=ext)["errcode"] == 0
    sandbox.platform.advisor_deletes_customer("lisi", ext)
    assert wecom_api.get("externalcontact/get", external_userid=ext)["errcode"] == 84061


def test_add_contact_way_validation(wecom_api: WeComApi, corp: dict[str, Any]) -> None:
    ok = wecom_api.post(
        "externalcontact/add_contact_way", {"type": 1, "scene": 2, "state": "s" * 30, "user": ["zhangsan"]}
    )
    assert ok["errcode"] == 0
    assert re.fullmatch(r"[0-9a-f]{32}", ok["config_id"])
    assert ok["qr_code"].startswith("https://")
    mini = wecom_api.post(
        "externalcontact/add_contact_way", {"type": 2, "scene": 1, "user": ["zhangsan", "lisi"]}
    )
    assert mini["errcode"] == 0 and "qr_code" not in mini

    def code(body: dict[str, Any]) -> int:
        return wecom_api.post("externalcontact/add_contact_way", body)["errcode"]

    assert code({"type": 1, "scene": 2, "state": "s" * 31, "user": ["zhangsan"]}) == 40058
    assert code({"type": 1, "scene": 2, "user": ["zhangsan", "lisi"]}) == 40058
    assert code({"type": 3, "scene": 2, "user": ["zhangsan"]}) == 40058
    assert code({"type": 1, "scene": 2}) == 40058
    assert code({"type": 1, "scene": 2, "user": ["ghost"]}) == 60111
    assert code({"type": 1, "scene": 2, "remark": "r" * 31, "user": ["zhangsan"]}) == 40058


def test_welcome_code_works_once(sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any]) -> None:
    added = _add(sandbox, config_id=corp["config_id"])
    body = {"welcome_code": added["welcome_code"], "text": {"content": "您好，我是张三"}}
    assert wecom_api.post("externalcontact/send_welcome_msg", body) == {"errcode": 0, "errmsg": "ok"}
    assert wecom_api.post("externalcontact/send_welcome_msg", body)["errcode"] == 41051
    [sent] = sandbox.state.welcome_messages
    assert (sent.userid, sent.external_userid, sent.text) == (
        "zhangsan",
        added["external_userid"],
        "您好，我是张三",
    )


def test_welcome_code_expires_after_20_seconds(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock
) -> None:
    first = _add(sandbox, config_id=corp["config_id"])["welcome_code"]
    second = _add(sandbox, config_id=corp["config_id"])["welcome_code"]
    clock.advance(19.9)
    hello = {"text": {"content": "hi"}}
    assert (
        wecom_api.post("externalcontact/send_welcome_msg", {"welcome_code": first, **hello})["errcode"] == 0
    )
    clock.advance(0.1)
    assert (
        wecom_api.post("externalcontact/send_welcome_msg", {"welcome_code": second, **hello})["errcode"]
        == 41050
    )
    assert (
        wecom_api.post("externalcontact/send_welcome_msg", {"welcome_code": "nope", **hello})["errcode"]
        == 41050
    )
    assert len(sandbox.state.welcome_messages) == 1


def test_welcome_message_size_is_checked_before_the_code_is_spent(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any]
) -> None:
    code = _add(sandbox, config_id=corp["config_id"])["welcome_code"]
    too_big = "中" * 1334  # 1334 characters, 4002 bytes: the limit is in bytes
    answer = wecom_api.post(
        "externalcontact/send_welcome_msg", {"welcome_code": code, "text": {"content": too_big}}
    )
    assert answer["errcode"] == 45002
    fits = "中" * 1333
    answer = wecom_api.post(
        "externalcontact/send_welcome_msg", {"welcome_code": code, "text": {"content": fits}}
    )
    assert answer["errcode"] == 0
    assert wecom_api.post("externalcontact/send_welcome_msg", {"welcome_code": code})["errcode"] == 40058


def test_no_welcome_code_when_an_admin_welcome_exists(sandbox: Sandbox, corp: dict[str, Any]) -> None:
    emission = sandbox.platform.customer_adds(config_id=corp["config_id"], welcome_code=False)
    assert "WelcomeCode" not in emission.plaintext
    assert "<State><![CDATA[dealer_a]]></State>" in emission.plaintext

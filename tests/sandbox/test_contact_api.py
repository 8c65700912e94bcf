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
    # No code at all is 41049 缺少欢迎语code参数, not an invalid one.
    assert wecom_api.post("externalcontact/send_welcome_msg", hello)["errcode"] == 41049
    assert wecom_api.post("externalcontact/send_welcome_msg", {"welcome_code": "", **hello})["errcode"] == 41049
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


def _way(wecom_api: WeComApi, state: str, user: str = "zhangsan", **extra: Any) -> str:
    body = {"type": 1, "scene": 2, "state": state, "user": [user], **extra}
    answer = wecom_api.post("externalcontact/add_contact_way", body)
    assert answer["errcode"] == 0, answer
    return answer["config_id"]


def test_get_contact_way_answers_what_add_contact_way_made(wecom_api: WeComApi, corp: dict[str, Any]) -> None:
    config_id = _way(wecom_api, "lp.SH01.RAV4", remark="dealer-scrm", skip_verify=False)
    answer = wecom_api.post("externalcontact/get_contact_way", {"config_id": config_id})
    assert (answer["errcode"], answer["errmsg"]) == (0, "ok")
    way = answer["contact_way"]
    assert way == {
        "config_id": config_id,
        "type": 1,
        "scene": 2,
        "style": 0,
        "remark": "dealer-scrm",
        "skip_verify": False,
        "state": "lp.SH01.RAV4",
        "user": ["zhangsan"],
        "party": [],
        "is_temp": False,
        "expires_in": 0,
        "chat_expires_in": 0,
        "unionid": "",
        "conclusions": {},
        "qr_code": f"https://wework.qpic.cn/wwpic/sandbox/{config_id}/0",
    }
    mini = wecom_api.post(
        "externalcontact/add_contact_way", {"type": 1, "scene": 1, "style": 2, "user": ["lisi"]}
    )
    got = wecom_api.post("externalcontact/get_contact_way", {"config_id": mini["config_id"]})["contact_way"]
    assert (got["scene"], got["style"], got["state"], "qr_code" in got) == (1, 2, "", False)


def test_get_contact_way_errors(wecom_api: WeComApi, corp: dict[str, Any]) -> None:
    def code(body: dict[str, Any]) -> int:
        return wecom_api.post("externalcontact/get_contact_way", body)["errcode"]

    assert code({}) == 41043  # missing config_id
    assert code({"config_id": ""}) == 41043
    assert code({"config_id": "0" * 32}) == 41044  # invalid config_id
    assert code({"config_id": 42}) == 40058
    answer = wecom_api.post("externalcontact/get_contact_way", {"config_id": "nope"})
    assert answer["errmsg"].startswith("invalid contact way config_id")
    assert wecom_api.get("externalcontact/get_contact_way", config_id=corp["config_id"])["errcode"] == 43002


def test_list_contact_way_pages_the_ways_created_in_the_range(
    wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock
) -> None:
    t0 = int(clock.time())  # the seeded way (corp["config_id"]) was made now
    made = []
    for i in range(5):
        clock.advance(60)
        made.append(_way(wecom_api, f"s{i}"))

    def listing(**body: Any) -> list[str]:
        ids, cursor, pages = [], "", 0
        while True:
            answer = wecom_api.post("externalcontact/list_contact_way", {**body, "cursor": cursor})
            assert answer["errcode"] == 0, answer
            assert set(answer) == {"errcode", "errmsg", "contact_way", "next_cursor"}
            assert all(set(item) == {"config_id"} for item in answer["contact_way"])
            ids += [item["config_id"] for item in answer["contact_way"]]
            pages += 1
            cursor = answer["next_cursor"]
            if not cursor:
                return [*ids, f"pages={pages}"]

    # No range: the last 90 days up to now, oldest first, 100 a page.
    assert listing() == [corp["config_id"], *made, "pages=1"]
    assert listing(limit=2) == [corp["config_id"], *made, "pages=3"]
    assert listing(start_time=t0 + 60, end_time=t0 + 180, limit=1) == [*made[:3], "pages=3"]
    assert listing(start_time=t0 + 61, limit=1000) == [*made[1:], "pages=1"]
    assert listing(start_time=t0 + 1, end_time=t0 + 59) == ["pages=1"]  # none in the range: one empty page
    first = wecom_api.post("externalcontact/list_contact_way", {"limit": 2})
    assert len(first["contact_way"]) == 2 and first["next_cursor"]
    # A cursor belongs to its query.
    other = wecom_api.post(
        "externalcontact/list_contact_way", {"limit": 2, "start_time": t0, "cursor": first["next_cursor"]}
    )
    assert other["errcode"] == 40058
    assert wecom_api.post("externalcontact/list_contact_way", {"cursor": "garbage!"})["errcode"] == 40058


def test_list_contact_way_reaches_back_90_days_at_most(
    wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock
) -> None:
    old = corp["config_id"]
    clock.advance(89 * 86400)
    now = int(clock.time())
    recent = _way(wecom_api, "recent")

    def answer(**body: Any) -> dict[str, Any]:
        return wecom_api.post("externalcontact/list_contact_way", body)

    assert [w["config_id"] for w in answer()["contact_way"]] == [old, recent]
    assert answer(start_time=now - 90 * 86400)["errcode"] == 0
    assert answer(start_time=now - 90 * 86400 - 1)["errcode"] == 40058
    clock.advance(2 * 86400)  # the first way is now 91 days old: out of reach
    wecom_api._token = None  # the token expired meanwhile
    assert [w["config_id"] for w in answer()["contact_way"]] == [recent]
    assert answer(start_time=now, end_time=now - 1)["errcode"] == 40058  # start after end
    assert answer(start_time="yesterday")["errcode"] == 40058
    assert answer(limit=1001)["errcode"] == 40058
    assert answer(limit=-1)["errcode"] == 40058
    assert answer(limit=1000)["errcode"] == 0


def test_contact_way_reads_are_rate_limited_per_api(
    control, wecom_api: WeComApi, corp: dict[str, Any]
) -> None:
    control.post(
        "/sandbox/config",
        json={"rate_limits": {"externalcontact/list_contact_way": 2, "externalcontact/get_contact_way": 1}},
    )
    codes = [wecom_api.post("externalcontact/list_contact_way", {})["errcode"] for _ in range(3)]
    assert codes == [0, 0, 45009]
    body = {"config_id": corp["config_id"]}
    codes = [wecom_api.post("externalcontact/get_contact_way", body)["errcode"] for _ in range(2)]
    assert codes == [0, 45009]

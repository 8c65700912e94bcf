"""Mass sends: add_msg_template, get_groupmsg_task, get_groupmsg_send_result, remind and cancel,
advisors confirming after a delay, the per-customer receiving limit and the per-path rate limit."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest

from app.clock import FrozenClock
from app.sandbox import Sandbox
from app.sandbox.assets import cover_png
from app.sandbox.massend import receiving_period
from tests.sandbox.conftest import WeComApi

ADD = "externalcontact/add_msg_template"
TASKS = "externalcontact/get_groupmsg_task"
RESULTS = "externalcontact/get_groupmsg_send_result"
REMIND = "externalcontact/remind_groupmsg_send"
CANCEL = "externalcontact/cancel_groupmsg_send"
TEXT = {"content": "周末试驾专场"}


def customers(sandbox: Sandbox, userid: str, n: int) -> list[str]:
    return [sandbox.platform.customer_adds(userid=userid).data["external_userid"] for _ in range(n)]


def add(api: WeComApi, **body: Any) -> dict[str, Any]:
    return api.post(ADD, {"text": TEXT, **body})


def results(api: WeComApi, msgid: str, userid: str) -> dict[str, int]:
    answer = api.post(RESULTS, {"msgid": msgid, "userid": userid})
    assert answer["errcode"] == 0, answer
    return {r["external_userid"]: r["status"] for r in answer["send_list"]}


def tasks(api: WeComApi, msgid: str) -> dict[str, int]:
    answer = api.post(TASKS, {"msgid": msgid})
    assert answer["errcode"] == 0, answer
    return {t["userid"]: t["status"] for t in answer["task_list"]}


def test_fail_list_and_one_task_per_member(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock
) -> None:
    mine = customers(sandbox, "zhangsan", 2)
    theirs = customers(sandbox, "lisi", 1)
    answer = add(wecom_api, sender="zhangsan", external_userid=[*mine, *theirs, "wmGhost"])
    assert answer["errcode"] == 0 and answer["msgid"].startswith("msg")
    assert answer["fail_list"] == [theirs[0], "wmGhost"]
    assert tasks(wecom_api, answer["msgid"]) == {"zhangsan": 0}
    assert results(wecom_api, answer["msgid"], "zhangsan") == dict.fromkeys(mine, 0)
    assert results(wecom_api, answer["msgid"], "lisi") == {}

    # Without a sender each customer goes to their member: one task per member.
    both = add(wecom_api, external_userid=[*mine, *theirs])
    assert both["fail_list"] == [] and tasks(wecom_api, both["msgid"]) == {"zhangsan": 0, "lisi": 0}
    # Only a sender: all that member's customers.
    only = add(wecom_api, sender="lisi")
    assert results(wecom_api, only["msgid"], "lisi") == {theirs[0]: 0}


def test_tag_filter_selects_the_senders_customers(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any]
) -> None:
    a, _ = customers(sandbox, "zhangsan", 2)
    sandbox.platform.advisor_edits_customer("zhangsan", a, add_tags=[corp["tags"]["SUV"]])
    group = {"group_list": [{"tag_list": [corp["tags"]["SUV"], corp["tags"]["轿车"]]}]}
    answer = add(wecom_api, sender="zhangsan", tag_filter=group)
    assert results(wecom_api, answer["msgid"], "zhangsan") == {a: 0}
    unknown = add(wecom_api, sender="zhangsan", tag_filter={"group_list": [{"tag_list": ["etNope"]}]})
    assert unknown["errcode"] == 40068


def test_validation_errors(sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any]) -> None:
    [ext] = customers(sandbox, "zhangsan", 1)
    ok = {"sender": "zhangsan", "external_userid": [ext]}
    assert add(wecom_api, **ok, chat_type="group")["errcode"] == 40058
    assert "not simulated" in add(wecom_api, **ok, chat_type="group")["errmsg"]
    assert (
        add(wecom_api, sender="zhangsan", external_userid=[f"wm{i}" for i in range(10001)])["errcode"]
        == 40058
    )
    assert wecom_api.post(ADD, {"text": TEXT})["errcode"] == 40058
    assert wecom_api.post(ADD, {**ok, "text": {"content": "字" * 1334}})["errcode"] == 45002
    assert wecom_api.post(ADD, {**ok, "text": {"content": "字" * 1333}})["errcode"] == 0
    assert wecom_api.post(ADD, ok)["errcode"] == 40058  # neither text nor attachments
    assert add(wecom_api, sender="wangwu", external_userid=[ext])["errcode"] == 60111
    link = {"msgtype": "link", "link": {"title": "报名", "url": "https://e.example.com"}}
    assert add(wecom_api, **ok, attachments=[link] * 9)["errcode"] == 0
    assert add(wecom_api, **ok, attachments=[link] * 10)["errcode"] == 40058
    bad = [
        {"msgtype": "link", "link": {"title": "报名"}},
        {"msgtype": "link", "link": {"title": "字" * 43, "url": "https://e.example.com"}},
        {"msgtype": "image", "image": {}},
        {
            "msgtype": "miniprogram",
            "miniprogram": {"title": "t", "appid": "wx1", "page": "p", "pic_url": "u"},
        },
        {"msgtype": "video", "video": {}},
        {"msgtype": "voice", "voice": {"media_id": "m"}},
    ]
    for item in bad:
        assert add(wecom_api, **ok, attachments=[item])["errcode"] == 40058, item
    # Media ids must be uploaded ones (tests/sandbox/test_media_upload.py: 40007 otherwise).
    media = {"image": cover_png(), "file": b"a price list"}
    ids = {
        kind: wecom_api.client.post(
            "/cgi-bin/media/upload",
            query_string={"access_token": wecom_api.token, "type": kind},
            data={"media": (io.BytesIO(data), f"m.{kind}")},
            content_type="multipart/form-data",
        ).json["media_id"]
        for kind, data in media.items()
    }
    good = [
        {"msgtype": "image", "image": {"pic_url": "https://p.example.com/1.png"}},
        {
            "msgtype": "miniprogram",
            "miniprogram": {"title": "t", "appid": "wx1", "page": "p", "pic_media_id": ids["image"]},
        },
        {"msgtype": "file", "file": {"media_id": ids["file"]}},
    ]
    assert add(wecom_api, **ok, attachments=good)["errcode"] == 0


def test_confirm_after_the_delay_on_the_sandbox_clock(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock, control
) -> None:
    control.post("/sandbox/config", json={"mass_send_confirm_delay": 60})
    a, b = customers(sandbox, "zhangsan", 2)
    msgid = add(wecom_api, sender="zhangsan", external_userid=[a, b])["msgid"]
    clock.advance(30)
    sandbox.platform.advisor_deletes_customer("zhangsan", b)  # gone before the advisor confirms
    assert tasks(wecom_api, msgid) == {"zhangsan": 0}
    clock.advance(30)
    answer = wecom_api.post(TASKS, {"msgid": msgid})
    [task] = answer["task_list"]
    assert task["status"] == 2 and task["send_time"] == int(clock.time())
    assert results(wecom_api, msgid, "zhangsan") == {a: 1, b: 2}
    stats = control.get("/sandbox/stats").json
    assert stats["mass_sends"] == 1 and stats["mass_send_tasks"]["sent"] == 1
    assert stats["mass_send_results"] == {"unsent": 0, "sent": 1, "not_friend": 1, "limited": 0}


def test_explicit_confirm_and_decliners(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock, control
) -> None:
    control.post(
        "/sandbox/config", json={"mass_send_confirm_delay": None, "mass_send_decline_userids": ["lisi"]}
    )
    [a] = customers(sandbox, "zhangsan", 1)
    [b] = customers(sandbox, "lisi", 1)
    msgid = add(wecom_api, external_userid=[a, b])["msgid"]
    clock.advance(3600)
    assert tasks(wecom_api, msgid) == {"zhangsan": 0, "lisi": 0}  # nobody confirms by themselves
    confirmed = control.post("/sandbox/mass_send/confirm", json={}).json["confirmed"]
    assert [(c["userid"], c["sent"]) for c in confirmed] == [("zhangsan", 1)]  # decliners stay
    assert tasks(wecom_api, msgid) == {"zhangsan": 2, "lisi": 0}
    assert wecom_api.post(REMIND, {"msgid": msgid})["errcode"] == 0
    # The decliner confirms when told to explicitly.
    answer = sandbox.platform.advisor_confirms_mass_send("lisi", msgid=msgid)
    assert [(c["userid"], c["sent"]) for c in answer["confirmed"]] == [("lisi", 1)]
    assert tasks(wecom_api, msgid) == {"zhangsan": 2, "lisi": 2}
    assert control.post("/sandbox/mass_send/confirm", json={"msgid": "msgNope"}).status_code == 400

    # Decliners never confirm with a delay either.
    control.post("/sandbox/config", json={"mass_send_confirm_delay": 0})
    later = add(wecom_api, external_userid=[a, b])["msgid"]
    assert tasks(wecom_api, later) == {"zhangsan": 2, "lisi": 0}


def test_remind_limit_per_24_hours(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock, control
) -> None:
    control.post("/sandbox/config", json={"mass_send_decline_userids": ["zhangsan"], "token_ttl": 10**7})
    [a] = customers(sandbox, "zhangsan", 1)
    msgid = add(wecom_api, sender="zhangsan", external_userid=[a])["msgid"]
    for _ in range(3):
        assert wecom_api.post(REMIND, {"msgid": msgid})["errcode"] == 0
        clock.advance(3600)
    assert wecom_api.post(REMIND, {"msgid": msgid})["errcode"] == 45009
    clock.advance(21 * 3600)  # the first reminder is now 24 h old
    assert wecom_api.post(REMIND, {"msgid": msgid})["errcode"] == 0
    assert wecom_api.post(REMIND, {"msgid": "msgNope"})["errcode"] == 40058
    assert wecom_api.post(REMIND, {})["errcode"] == 40058
    assert control.get("/sandbox/stats").json["mass_send_reminders"] == 4


def test_cancel_before_and_after_confirm(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock, control
) -> None:
    control.post("/sandbox/config", json={"mass_send_confirm_delay": 10})
    [a] = customers(sandbox, "zhangsan", 1)
    [b] = customers(sandbox, "lisi", 1)
    msgid = add(wecom_api, external_userid=[a, b])["msgid"]
    sandbox.platform.advisor_confirms_mass_send("zhangsan")
    assert wecom_api.post(CANCEL, {"msgid": msgid})["errcode"] == 0
    clock.advance(60)
    assert tasks(wecom_api, msgid) == {"zhangsan": 2, "lisi": 0}  # sent stays, lisi never sends
    assert results(wecom_api, msgid, "lisi") == {b: 0}
    assert results(wecom_api, msgid, "zhangsan") == {a: 1}
    assert sandbox.platform.advisor_confirms_mass_send("lisi")["confirmed"] == []
    assert wecom_api.post(CANCEL, {"msgid": msgid})["errcode"] == 0  # again: nothing changes
    [listed] = control.get(f"/sandbox/mass_sends?msgid={msgid}").json
    assert listed["cancelled_at"] is not None
    assert [t["state"] for t in listed["tasks"]] == ["sent", "cancelled"]


def test_receiving_limit_reports_status_3(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock, control
) -> None:
    control.post(
        "/sandbox/config",
        json={"mass_send_confirm_delay": 0, "mass_send_receive_rule": "month4", "token_ttl": 10**7},
    )
    [a] = customers(sandbox, "zhangsan", 1)
    [b] = customers(sandbox, "lisi", 1)
    sent = []
    for _ in range(4):
        msgid = add(wecom_api, sender="zhangsan", external_userid=[a])["msgid"]
        sent.append(results(wecom_api, msgid, "zhangsan")[a])
    assert sent == [1, 1, 1, 1]
    # Over the limit: the task is created all the same, the customer is reported, not dropped.
    answer = add(wecom_api, external_userid=[a, b])
    assert answer["fail_list"] == []
    assert results(wecom_api, answer["msgid"], "zhangsan") == {a: 3}
    assert results(wecom_api, answer["msgid"], "lisi") == {b: 1}
    # A new natural month (China time) starts a new count: 2026-12-01 00:00 +08:00.
    clock.advance(datetime(2026, 11, 30, 16, 0, tzinfo=UTC).timestamp() - clock.time())
    msgid = add(wecom_api, sender="zhangsan", external_userid=[a])["msgid"]
    assert results(wecom_api, msgid, "zhangsan") == {a: 1}


def test_receiving_rules() -> None:
    at = int(datetime(2026, 2, 11, 12, 0, tzinfo=UTC).timestamp())  # a Wednesday, 20:00 in China
    assert receiving_period("month", at) == (28, int(datetime(2026, 1, 31, 16, tzinfo=UTC).timestamp()))
    assert receiving_period("month4", at)[0] == 4
    assert receiving_period("week", at) == (7, int(datetime(2026, 2, 8, 16, tzinfo=UTC).timestamp()))
    assert receiving_period("day", at) == (1, int(datetime(2026, 2, 10, 16, tzinfo=UTC).timestamp()))


def test_day_rule_one_message_per_day(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock, control
) -> None:
    control.post("/sandbox/config", json={"mass_send_confirm_delay": 0, "mass_send_receive_rule": "day"})
    [a] = customers(sandbox, "zhangsan", 1)
    first = add(wecom_api, sender="zhangsan", external_userid=[a])["msgid"]
    second = add(wecom_api, sender="zhangsan", external_userid=[a])["msgid"]
    assert results(wecom_api, first, "zhangsan") == {a: 1}
    assert results(wecom_api, second, "zhangsan") == {a: 3}


def test_paging_with_cursors(sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any]) -> None:
    exts = customers(sandbox, "zhangsan", 5)
    msgid = add(wecom_api, sender="zhangsan", external_userid=exts)["msgid"]
    seen, cursor = [], ""
    for _ in range(3):
        answer = wecom_api.post(RESULTS, {"msgid": msgid, "userid": "zhangsan", "limit": 2, "cursor": cursor})
        assert answer["errcode"] == 0
        seen += [r["external_userid"] for r in answer["send_list"]]
        cursor = answer["next_cursor"]
    assert seen == exts and cursor == ""
    assert wecom_api.post(RESULTS, {"msgid": msgid, "userid": "zhangsan", "limit": "2"})["errcode"] == 40058
    assert (
        wecom_api.post(RESULTS, {"msgid": msgid, "userid": "zhangsan", "cursor": "junk"})["errcode"] == 40058
    )
    other = wecom_api.post(TASKS, {"msgid": msgid, "limit": 1})
    assert other["task_list"] == [{"userid": "zhangsan", "status": 0}] and other["next_cursor"] == ""
    assert wecom_api.post(TASKS, {"msgid": "msgNope"})["errcode"] == 40058


@pytest.mark.parametrize("path", [ADD, TASKS])
def test_rate_limit_answers_45009(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock, control, path: str
) -> None:
    [a] = customers(sandbox, "zhangsan", 1)
    msgid = add(wecom_api, sender="zhangsan", external_userid=[a])["msgid"]
    control.post("/sandbox/config", json={"rate_limits": {path: 2}})
    clock.advance(60)  # a fresh window
    body = {"msgid": msgid} if path == TASKS else {"text": TEXT, "sender": "zhangsan", "external_userid": [a]}
    codes = [wecom_api.post(path, body)["errcode"] for _ in range(3)]
    assert codes == [0, 0, 45009]
    clock.advance(60)
    assert wecom_api.post(path, body)["errcode"] == 0
    assert control.get("/sandbox/stats").json["errors_by_path"] == {f"{path}:45009": 1}


def test_reset_empties_mass_sends(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], control
) -> None:
    [a] = customers(sandbox, "zhangsan", 1)
    add(wecom_api, sender="zhangsan", external_userid=[a])
    assert len(control.get("/sandbox/mass_sends").json) == 1
    control.post("/sandbox/reset", json={})
    assert control.get("/sandbox/mass_sends").json == []
    assert control.get("/sandbox/stats").json["mass_sends"] == 0


def test_list_v2_by_time_range_and_no_creator_for_api_sends(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock
) -> None:
    now = int(clock.time())
    first = add(wecom_api, sender="zhangsan", external_userid=customers(sandbox, "zhangsan", 1))["msgid"]
    clock.advance(120)
    second = add(wecom_api, sender="lisi", external_userid=customers(sandbox, "lisi", 1))["msgid"]
    listed = "externalcontact/get_groupmsg_list_v2"
    window = {"chat_type": "single", "start_time": now - 10, "end_time": now + 600}
    every = wecom_api.post(listed, window)
    assert [m["msgid"] for m in every["group_msg_list"]] == [first, second]
    assert every["group_msg_list"][0]["text"] == TEXT and every["group_msg_list"][0]["create_type"] == 0
    mine = wecom_api.post(listed, {**window, "creator": "zhangsan"})
    assert mine["group_msg_list"] == []  # an API-made send has no creator (doc 93338)
    early = wecom_api.post(listed, {**window, "end_time": now + 60})
    assert [m["msgid"] for m in early["group_msg_list"]] == [first]
    assert wecom_api.post(listed, {**window, "filter_type": 1})["group_msg_list"] == []  # personal sends
    too_long = wecom_api.post(listed, {**window, "end_time": now + 40 * 86400})
    assert too_long["errcode"] == 40058


def test_list_v2_pages_of_50_at_most_100_and_only_single_chat_sends(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock
) -> None:
    """get_groupmsg_list_v2 (doc 93338): limit at most 100, default 50, a larger one takes the
    default; chat_type group lists group-chat sends only (none here); an API send has no creator."""
    [a] = customers(sandbox, "zhangsan", 1)
    now = int(clock.time())
    sent = [add(wecom_api, sender="zhangsan", external_userid=[a])["msgid"] for _ in range(55)]
    listed = "externalcontact/get_groupmsg_list_v2"
    window = {"chat_type": "single", "start_time": now - 10, "end_time": now + 600}

    def read(limit: int | None) -> list[int]:
        sizes, cursor, seen = [], "", []
        while True:
            body = {**window, "cursor": cursor, **({} if limit is None else {"limit": limit})}
            answer = wecom_api.post(listed, body)
            assert answer["errcode"] == 0, answer
            sizes.append(len(answer["group_msg_list"]))
            seen += [m["msgid"] for m in answer["group_msg_list"]]
            cursor = answer["next_cursor"]
            if not cursor:
                assert sorted(seen) == sorted(sent)  # each send once
                return sizes

    assert read(None) == [50, 5]
    assert read(100) == [55]
    assert read(101) == [50, 5]  # over the maximum: the default
    assert read(20) == [20, 20, 15]
    first = wecom_api.post(listed, window)["group_msg_list"][0]
    assert "creator" not in first and first["create_type"] == 0
    assert wecom_api.post(listed, {**window, "chat_type": "group"})["group_msg_list"] == []


def test_task_and_result_limits_over_1000_take_the_default(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any], clock: FrozenClock, control
) -> None:
    """get_groupmsg_task / get_groupmsg_send_result: limit at most 1000, default 500, a larger
    one takes the default (doc 93338); send_time only for a customer sent to (status 1)."""
    control.post("/sandbox/config", json={"mass_send_confirm_delay": 60})
    a, b = customers(sandbox, "zhangsan", 2)
    msgid = add(wecom_api, sender="zhangsan", external_userid=[a, b])["msgid"]
    sandbox.platform.advisor_deletes_customer("zhangsan", b)  # status 2 when the advisor confirms
    clock.advance(60)
    tasks_answer = wecom_api.post(TASKS, {"msgid": msgid, "limit": 5000})
    assert tasks_answer["errcode"] == 0 and [t["userid"] for t in tasks_answer["task_list"]] == ["zhangsan"]
    answer = wecom_api.post(RESULTS, {"msgid": msgid, "userid": "zhangsan", "limit": 1001})
    assert answer["errcode"] == 0
    assert answer["send_list"] == [
        {"external_userid": a, "userid": "zhangsan", "status": 1, "send_time": int(clock.time())},
        {"external_userid": b, "userid": "zhangsan", "status": 2},
    ]
    assert wecom_api.post(RESULTS, {"msgid": msgid, "userid": "zhangsan", "limit": -1})["errcode"] == 40058

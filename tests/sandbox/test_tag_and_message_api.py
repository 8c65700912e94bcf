"""Corp tags, mark_tag, transfer_customer, message/send, user/get and request-level errors."""

from __future__ import annotations

from typing import Any

from app.sandbox import Sandbox
from tests.sandbox.conftest import AGENT_ID, WeComApi


def test_mark_tag_and_its_errors(sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any]) -> None:
    ext = sandbox.platform.customer_adds(config_id=corp["config_id"]).data["external_userid"]
    suv, sedan = corp["tags"]["SUV"], corp["tags"]["轿车"]
    body = {"userid": "zhangsan", "external_userid": ext, "add_tag": [suv, sedan]}
    assert wecom_api.post("externalcontact/mark_tag", body)["errcode"] == 0
    assert (
        wecom_api.post("externalcontact/mark_tag", {**body, "add_tag": [], "remove_tag": [sedan]})["errcode"]
        == 0
    )
    [follow] = wecom_api.get("externalcontact/get", external_userid=ext)["follow_user"]
    assert follow["tags"] == [{"group_name": "车型", "tag_name": "SUV", "tag_id": suv, "type": 1}]

    assert wecom_api.post("externalcontact/mark_tag", {**body, "add_tag": ["etUnknown"]})["errcode"] == 40068
    assert wecom_api.post("externalcontact/mark_tag", {**body, "userid": "lisi"})["errcode"] == 84061
    assert (
        wecom_api.post("externalcontact/mark_tag", {**body, "external_userid": "wmGhost"})["errcode"] == 40096
    )


def test_corp_tag_library(wecom_api: WeComApi, corp: dict[str, Any]) -> None:
    added = wecom_api.post(
        "externalcontact/add_corp_tag", {"group_name": "车型", "tag": [{"name": "MPV", "order": 3}]}
    )
    assert added["errcode"] == 0
    assert added["tag_group"]["group_id"] == corp["group_id"]  # an existing group name gets the tag
    mpv = added["tag_group"]["tag"][0]["id"]
    assert [t["name"] for t in added["tag_group"]["tag"]] == ["MPV"]

    new_group = wecom_api.post(
        "externalcontact/add_corp_tag", {"group_name": "意向", "tag": [{"name": "高"}]}
    )
    assert new_group["tag_group"]["group_id"] != corp["group_id"]

    everything = wecom_api.post("externalcontact/get_corp_tag_list")["tag_group"]
    assert [g["group_name"] for g in everything] == ["车型", "意向"]
    assert [t["name"] for t in everything[0]["tag"]] == ["SUV", "轿车", "MPV"]
    only_mpv = wecom_api.post("externalcontact/get_corp_tag_list", {"tag_id": [mpv]})
    assert [[t["id"] for t in g["tag"]] for g in only_mpv["tag_group"]] == [[mpv]]
    # Doc 92117: given both, tag_id is ignored and group_id alone filters.
    both = wecom_api.post(
        "externalcontact/get_corp_tag_list",
        {"tag_id": [mpv], "group_id": [new_group["tag_group"]["group_id"]]},
    )
    assert [(g["group_name"], [t["name"] for t in g["tag"]]) for g in both["tag_group"]] == [("意向", ["高"])]
    assert wecom_api.post(
        "externalcontact/get_corp_tag_list", {"tag_id": [mpv], "group_id": ["etNoSuchGroup"]}
    )["tag_group"] == []
    by_group = wecom_api.post(
        "externalcontact/get_corp_tag_list", {"group_id": [new_group["tag_group"]["group_id"]]}
    )
    assert [g["group_name"] for g in by_group["tag_group"]] == ["意向"]

    def code(body: dict[str, Any]) -> int:
        return wecom_api.post("externalcontact/add_corp_tag", body)["errcode"]

    assert code({"group_name": "车型", "tag": [{"name": "SUV"}]}) == 40071
    assert code({"group_id": "etNoSuchGroup", "tag": [{"name": "x"}]}) == 40068
    assert code({"group_name": "g", "tag": [{"name": "n" * 31}]}) == 40058
    assert code({"group_name": "g", "tag": []}) == 40058


def test_transfer_customer_records_pending_transfers(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any]
) -> None:
    ext = sandbox.platform.customer_adds(config_id=corp["config_id"]).data["external_userid"]
    other = sandbox.platform.customer_adds(userid="lisi").data["external_userid"]
    body = {
        "handover_userid": "zhangsan",
        "takeover_userid": "lisi",
        "external_userid": [ext, other, "wmGhost"],
    }
    answer = wecom_api.post("externalcontact/transfer_customer", body)
    assert answer["errcode"] == 0
    assert answer["customer"] == [
        {"external_userid": ext, "errcode": 0},
        {"external_userid": other, "errcode": 40131},  # handover_userid is not its follow user
        {"external_userid": "wmGhost", "errcode": 40096},
    ]
    # A customer whose transfer is pending: 40129 当前客户正在转接中, what WeCom answers a repeated
    # transfer_customer (40100 belongs to the old externalcontact/transfer).
    again = wecom_api.post("externalcontact/transfer_customer", {**body, "external_userid": [ext]})
    assert again["customer"] == [{"external_userid": ext, "errcode": 40129}]
    to_self = {**body, "takeover_userid": "zhangsan", "external_userid": [ext]}
    assert wecom_api.post("externalcontact/transfer_customer", to_self)["customer"] == [
        {"external_userid": ext, "errcode": 40130}
    ]
    assert (
        wecom_api.post("externalcontact/transfer_customer", {**body, "takeover_userid": "ghost"})["errcode"]
        == 60111
    )
    too_many = {**body, "external_userid": [ext] * 101}
    assert wecom_api.post("externalcontact/transfer_customer", too_many)["errcode"] == 40058

    # Still zhangsan's until the transfer completes.
    assert wecom_api.get("externalcontact/list", userid="zhangsan")["external_userid"] == [ext]
    [emission] = sandbox.platform.complete_transfers()
    assert "<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>" in emission.plaintext
    assert wecom_api.get("externalcontact/list", userid="zhangsan")["external_userid"] == []
    assert ext in wecom_api.get("externalcontact/list", userid="lisi")["external_userid"]


def test_message_send(
    sandbox: Sandbox, agent_api: WeComApi, wecom_api: WeComApi, corp: dict[str, Any]
) -> None:
    body = {"touser": "zhangsan|ghost", "msgtype": "text", "agentid": AGENT_ID, "text": {"content": "提醒"}}
    answer = agent_api.post("message/send", body)
    assert answer["errcode"] == 0
    assert answer["invaliduser"] == "ghost"
    assert answer["msgid"]
    [sent] = sandbox.state.app_messages
    assert (sent.touser, sent.msgtype, sent.content) == (["zhangsan"], "text", {"content": "提醒"})

    assert agent_api.post("message/send", {**body, "text": {"content": "字" * 683}})["errcode"] == 45002
    assert agent_api.post("message/send", {**body, "text": {"content": "字" * 682}})["errcode"] == 0
    assert agent_api.post("message/send", {**body, "touser": "ghost"})["errcode"] == 81013
    assert agent_api.post("message/send", {**body, "agentid": 1})["errcode"] == 40056
    # The customer-contact secret's token belongs to no agent.
    assert wecom_api.post("message/send", body)["errcode"] == 301002
    party = agent_api.post("message/send", {**body, "touser": "", "toparty": "3|99"})
    assert party["invalidparty"] == "99"
    assert sandbox.state.app_messages[-1].touser == ["lisi"]


def test_user_get(wecom_api: WeComApi, corp: dict[str, Any]) -> None:
    user = wecom_api.get("user/get", userid="zhangsan")
    assert user["errcode"] == 0
    assert (user["name"], user["department"], user["mobile"]) == ("张三", [2], "13800000001")
    assert wecom_api.get("user/get", userid="ghost")["errcode"] == 60111


def test_request_level_errors(wecom_api: WeComApi) -> None:
    token = wecom_api.token
    wrong_method = wecom_api.client.get(
        "/cgi-bin/externalcontact/mark_tag", query_string={"access_token": token}
    )
    assert wrong_method.json["errcode"] == 43002
    wrong_method = wecom_api.client.post("/cgi-bin/user/get", query_string={"access_token": token})
    assert wrong_method.json["errcode"] == 43001
    not_json = wecom_api.client.post(
        "/cgi-bin/externalcontact/mark_tag", query_string={"access_token": token}, data=b"<xml/>"
    )
    assert not_json.json["errcode"] == 47001
    unknown = wecom_api.client.get("/cgi-bin/no/such/api", query_string={"access_token": token})
    assert unknown.status_code == 404
    assert unknown.json["errcode"] == 48001
    wrong_type = wecom_api.post(
        "externalcontact/mark_tag", {"userid": 5, "external_userid": "x", "add_tag": ["t"]}
    )
    assert wrong_type["errcode"] == 40058

"""WeComClient against a mocked WeCom (``responses``) and real Redis."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError

from app.clock import SystemClock
from app.wecom.errors import OutcomeUnknown, RateLimited, WeComError, WeComUnavailable
from app.wecom.tokens import token_key

from .conftest import API, CORP, SECRET, calls_to, query

OK = {"errcode": 0, "errmsg": "ok"}
CONTACT = {**OK, "external_contact": {"external_userid": "wmEXT", "name": "Li"}, "follow_user": []}


def test_token_is_fetched_once_and_shared_by_two_processes(http, token_server, make_client, rconn) -> None:
    http.get(API + "externalcontact/get", json=CONTACT)
    a, b = make_client(), make_client()
    assert a.external_contact.get("wmEXT")["external_contact"]["name"] == "Li"
    assert b.external_contact.get("wmEXT")["external_contact"]["name"] == "Li"
    assert len(token_server.issued) == 1
    used = [query(c.request)["access_token"] for c in calls_to(http, "externalcontact/get")]
    assert used == token_server.issued * 2
    assert rconn.get(token_key(CORP, "contact")).decode() == token_server.issued[0]
    assert 6890 <= rconn.ttl(token_key(CORP, "contact")) <= 6900


def test_gettoken_uses_the_configured_api_base(http, token_server, make_client) -> None:
    http.get(API + "user/get", json={**OK, "userid": "zhangsan"})
    make_client().user.get("zhangsan")
    (call,) = calls_to(http, "gettoken")
    assert call.request.url.startswith(API + "gettoken?")
    assert query(call.request) == {"corpid": CORP, "corpsecret": SECRET}


def test_cold_cache_many_threads_one_gettoken(http, make_client) -> None:
    issued: list[str] = []
    lock = threading.Lock()

    def gettoken(request: Any) -> tuple[int, dict, str]:
        with lock:
            issued.append("TOKEN-ONLY")
        threading.Event().wait(0.2)  # slow enough for every thread to find the cache cold
        return 200, {}, json.dumps({**OK, "access_token": "TOKEN-ONLY", "expires_in": 7200})

    http.add_callback(responses.GET, API + "gettoken", callback=gettoken)
    http.get(API + "externalcontact/get", json=CONTACT)
    # SystemClock: the waiters really wait for the holder's (real-time) HTTP call.
    clients = [make_client(clock_=SystemClock()) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    errors: list[BaseException] = []

    def run(c) -> None:
        try:
            barrier.wait()
            c.external_contact.get("wmEXT")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert errors == []
    assert issued == ["TOKEN-ONLY"]
    assert len(calls_to(http, "externalcontact/get")) == 8


class ExpiringApi:
    """externalcontact/get that rejects tokens in ``expired`` (or every token) with ``errcode``."""

    def __init__(self, http, errcode: int, always: bool = False) -> None:
        self.errcode, self.always = errcode, always
        self.expired: set[str] = set()
        http.add_callback(responses.GET, API + "externalcontact/get", callback=self._answer)

    def _answer(self, request: Any) -> tuple[int, dict, str]:
        token = query(request)["access_token"]
        if self.always or token in self.expired:
            return 200, {}, json.dumps({"errcode": self.errcode, "errmsg": "access_token expired, hint: [x]"})
        return 200, {}, json.dumps(CONTACT)


@pytest.mark.parametrize("errcode", [42001, 40014])
def test_expired_token_one_refresh_and_one_retry(errcode, http, token_server, make_client, rconn) -> None:
    api = ExpiringApi(http, errcode)
    client = make_client()
    client.external_contact.get("wmEXT")  # caches TOKEN-1
    api.expired.add(token_server.issued[0])
    assert client.external_contact.get("wmEXT")["external_contact"]["external_userid"] == "wmEXT"
    assert len(token_server.issued) == 2
    used = [query(c.request)["access_token"] for c in calls_to(http, "externalcontact/get")]
    assert used == [token_server.issued[0], token_server.issued[0], token_server.issued[1]]
    assert rconn.get(token_key(CORP, "contact")).decode() == token_server.issued[1]


@pytest.mark.parametrize("errcode", [42001, 40014])
def test_server_always_expired_is_bounded(errcode, http, token_server, make_client) -> None:
    ExpiringApi(http, errcode, always=True)
    with pytest.raises(WeComError) as info:
        make_client().external_contact.get("wmEXT")
    assert info.value.errcode == errcode
    assert info.value.api == "externalcontact/get"
    assert not info.value.retryable
    assert len(token_server.issued) == 2  # the cold fetch and exactly one refresh
    assert len(calls_to(http, "externalcontact/get")) == 2


def test_stale_token_does_not_delete_a_fresher_one(http, token_server, make_client, rconn) -> None:
    key = token_key(CORP, "contact")
    rconn.set(key, "STALE", ex=600)

    def answer(request: Any) -> tuple[int, dict, str]:
        if query(request)["access_token"] == "STALE":
            rconn.set(key, "FRESH-FROM-OTHER-PROCESS", ex=600)  # another worker refreshed meanwhile
            return 200, {}, json.dumps({"errcode": 42001, "errmsg": "expired"})
        return 200, {}, json.dumps(CONTACT)

    http.add_callback(responses.GET, API + "externalcontact/get", callback=answer)
    make_client().external_contact.get("wmEXT")
    assert token_server.issued == []  # reused the other process's token, no gettoken
    used = [query(c.request)["access_token"] for c in calls_to(http, "externalcontact/get")]
    assert used == ["STALE", "FRESH-FROM-OTHER-PROCESS"]
    assert rconn.get(key) == b"FRESH-FROM-OTHER-PROCESS"


def _busy(kind: str) -> dict[str, Any]:
    if kind == "45009":
        return {"json": {"errcode": 45009, "errmsg": "api freq out of limit"}}
    if kind == "-1":
        return {"json": {"errcode": -1, "errmsg": "system busy"}}
    if kind == "502":
        return {"status": 502, "body": "<html>bad gateway</html>"}
    if kind == "timeout":
        return {"body": requests.ReadTimeout("Read timed out.")}
    return {"body": requests.ConnectionError("Connection refused")}


KINDS = ["45009", "-1", "502", "timeout", "connection"]


@pytest.mark.parametrize("kind", KINDS)
def test_transient_failures_back_off_then_succeed(kind, http, token_server, make_client, clock) -> None:
    for _ in range(2):
        http.post(API + "message/send", **_busy(kind))
    http.post(API + "message/send", json={**OK, "msgid": "m1"})
    client = make_client(max_attempts=4, backoff_base=0.5)
    assert client.message.send_text(1000002, ["zhangsan"], "hi")["msgid"] == "m1"
    assert len(calls_to(http, "message/send")) == 3
    assert len(clock.slept) == 2
    assert 0.5 <= clock.slept[0] < clock.slept[1] <= 1.25


@pytest.mark.parametrize("kind", KINDS)
def test_transient_failures_give_up_with_wecom_unavailable(
    kind, http, token_server, make_client, clock
) -> None:
    http.post(API + "message/send", **_busy(kind))
    client = make_client(max_attempts=4, backoff_base=0.5)
    with pytest.raises(WeComUnavailable) as info:
        client.message.send_text(1000002, ["zhangsan"], "hi")
    assert info.value.retryable
    assert info.value.api == "message/send"
    assert len(calls_to(http, "message/send")) == 4
    assert len(clock.slept) == 3
    assert clock.slept[0] < clock.slept[1] < clock.slept[2]
    if kind in ("45009", "-1"):
        assert info.value.errcode == int(kind)


TEMPLATE = {
    "chat_type": "single",
    "sender": "zhangsan",
    "external_userid": ["wm1"],
    "text": {"content": "hi"},
}


@pytest.mark.parametrize("kind", ["502", "timeout", "connection"])
def test_a_mass_send_that_may_have_been_made_is_not_sent_again(
    kind, http, token_server, make_client, clock
) -> None:
    """add_msg_template has no dedup handle: after a 5xx, a read timeout or a dropped connection
    WeCom may hold the task, so the client raises OutcomeUnknown at once instead of retrying."""
    http.post(API + "externalcontact/add_msg_template", **_busy(kind))
    http.post(API + "externalcontact/add_msg_template", json={**OK, "msgid": "m2", "fail_list": []})
    with pytest.raises(OutcomeUnknown) as info:
        make_client(max_attempts=4).post("externalcontact/add_msg_template", data=TEMPLATE)
    assert info.value.retryable and info.value.api == "externalcontact/add_msg_template"
    assert len(calls_to(http, "externalcontact/add_msg_template")) == 1
    assert clock.slept == []


@pytest.mark.parametrize("kind", ["45009", "-1", "429", "refused"])
def test_a_mass_send_wecom_certainly_did_not_make_is_retried(
    kind, http, token_server, make_client, clock
) -> None:
    """WeCom answering busy, or no connection at all: nothing was made, retrying is safe."""
    if kind == "429":
        failure: dict[str, Any] = {"status": 429, "body": "slow down"}
    elif kind == "refused":
        failure = {
            "body": requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused")))
        }
    else:
        failure = _busy(kind)
    http.post(API + "externalcontact/add_msg_template", **failure)
    http.post(API + "externalcontact/add_msg_template", json={**OK, "msgid": "m2", "fail_list": []})
    answer = make_client(max_attempts=4).post("externalcontact/add_msg_template", data=TEMPLATE)
    assert answer["msgid"] == "m2"
    assert len(calls_to(http, "externalcontact/add_msg_template")) == 2


def test_backoff_is_capped(http, token_server, make_client, clock) -> None:
    http.post(API + "message/send", status=503)
    client = make_client(max_attempts=6, backoff_base=1.0, backoff_max=3.0)
    with pytest.raises(WeComUnavailable):
        client.message.send_text(1000002, ["zhangsan"], "hi")
    assert len(clock.slept) == 5
    assert all(s <= 3.0 * 1.25 for s in clock.slept)


def test_gettoken_outage_counts_as_attempts(http, make_client, clock) -> None:
    http.get(API + "gettoken", status=502)
    with pytest.raises(WeComUnavailable) as info:
        make_client(max_attempts=3).external_contact.get("wmEXT")
    assert len(calls_to(http, "gettoken")) == 3
    assert len(clock.slept) == 2
    assert info.value.api == "externalcontact/get"


def test_wrong_secret_is_a_business_error(http, make_client) -> None:
    http.get(API + "gettoken", json={"errcode": 40001, "errmsg": "invalid credential"})
    with pytest.raises(WeComError) as info:
        make_client().external_contact.get("wmEXT")
    assert (info.value.errcode, info.value.api) == (40001, "gettoken")
    assert len(calls_to(http, "gettoken")) == 1


def test_business_error_is_raised_at_once(http, token_server, make_client, clock) -> None:
    http.post(
        API + "externalcontact/send_welcome_msg", json={"errcode": 41050, "errmsg": "welcome code expired"}
    )
    with pytest.raises(WeComError) as info:
        make_client().external_contact.send_welcome_msg({"welcome_code": "W", "text": {"content": "hello"}})
    assert info.value.errcode == 41050
    assert info.value.api == "externalcontact/send_welcome_msg"
    assert not info.value.retryable
    assert len(calls_to(http, "externalcontact/send_welcome_msg")) == 1
    assert clock.slept == []


def test_http_4xx_is_not_retried(http, token_server, make_client) -> None:
    http.get(API + "externalcontact/get", status=404)
    with pytest.raises(WeComError) as info:
        make_client().external_contact.get("wmEXT")
    assert info.value.errcode is None
    assert len(calls_to(http, "externalcontact/get")) == 1


def test_every_attempt_takes_a_rate_limit_slot(http, token_server, make_client, rconn) -> None:
    http.get(API + "externalcontact/get", status=502)
    http.get(API + "externalcontact/get", json=CONTACT)
    make_client().external_contact.get("wmEXT")
    assert rconn.zcard(f"scrm:ratelimit:{CORP}:externalcontact/get") == 2
    assert rconn.zcard(f"scrm:ratelimit:{CORP}:gettoken") == 1


def test_rate_limit_shared_by_clients_and_raised(http, token_server, make_client, clock) -> None:
    http.post(API + "externalcontact/add_msg_template", json={**OK, "msgid": "g1", "fail_list": []})
    over = {"externalcontact/add_msg_template": 1}
    a = make_client(overrides=over, rate_limit_max_wait=5)
    b = make_client(overrides=over, rate_limit_max_wait=5)
    a.external_contact.add_msg_template({"external_userid": ["wmEXT"], "text": {"content": "x"}})
    with pytest.raises(RateLimited):
        b.external_contact.add_msg_template({"external_userid": ["wmEXT"], "text": {"content": "x"}})
    assert len(calls_to(http, "externalcontact/add_msg_template")) == 1


def test_rate_limit_wait_then_call(http, token_server, make_client, clock) -> None:
    http.post(API + "externalcontact/add_msg_template", json={**OK, "msgid": "g1", "fail_list": []})
    client = make_client(overrides={"externalcontact/add_msg_template": 1}, rate_limit_max_wait=120)
    client.external_contact.add_msg_template({"external_userid": ["a"], "text": {"content": "x"}})
    clock.advance(20)
    client.external_contact.add_msg_template({"external_userid": ["b"], "text": {"content": "x"}})
    assert clock.slept == [pytest.approx(40.0)]
    assert len(calls_to(http, "externalcontact/add_msg_template")) == 2


def test_secrets_never_reach_logs_or_exceptions(http, token_server, make_client, caplog) -> None:
    caplog.set_level(logging.DEBUG)

    def refuse(request: Any) -> Any:
        # A real connection error quotes the full URL, token and all.
        raise requests.ConnectionError(f"Max retries exceeded with url: {request.url}")

    http.add_callback(responses.POST, API + "message/send", callback=refuse)
    http.get(API + "externalcontact/get", json={"errcode": 42001, "errmsg": "expired"})
    client = make_client(max_attempts=2)
    with pytest.raises(WeComUnavailable) as unavailable:
        client.message.send_text(1000002, ["zhangsan"], "hi")
    with pytest.raises(WeComError) as expired:
        client.external_contact.get("wmEXT")
    assert token_server.issued
    texts = [caplog.text, str(unavailable.value), repr(unavailable.value), str(expired.value), repr(client)]
    for text in texts:
        for token in token_server.issued:
            assert token not in text
        assert SECRET not in text
        assert "access_token=TOKEN" not in text
    assert "access_token=***" in str(unavailable.value)
    assert unavailable.value.__suppress_context__  # the raw requests error is not chained


def test_urllib3_request_lines_are_redacted_in_logs(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s',
        "https",
        "qyapi",
        443,
        "GET",
        "/cgi-bin/x?access_token=SEKRIT&a=1",
        "HTTP/1.1",
        200,
        10,
    )
    assert "SEKRIT" not in caplog.text
    assert "access_token=***&a=1" in caplog.text


def test_thin_methods_post_the_documented_bodies(http, token_server, make_client) -> None:
    for path in (
        "transfer_customer",
        "get_groupmsg_task",
        "get_groupmsg_send_result",
        "remind_groupmsg_send",
        "cancel_groupmsg_send",
    ):
        http.post(API + "externalcontact/" + path, json=OK)
    http.get(API + "auth/getuserinfo", json={**OK, "userid": "zhangsan"})
    c = make_client()
    c.transfer_customer("u1", "u2", ["e1", "e2"], transfer_success_msg="好")
    c.transfer_customer("u1", "u2", ["e3"])
    c.get_groupmsg_task("msg1", cursor="CUR")
    c.get_groupmsg_send_result("msg1", "u1", limit=50)
    c.remind_groupmsg_send("msg1")
    c.cancel_groupmsg_send("msg1")
    assert c.get_user_id_by_code("CODE")["userid"] == "zhangsan"

    def body(path: str, i: int = 0) -> dict:
        return json.loads(calls_to(http, "externalcontact/" + path)[i].request.body)

    assert body("transfer_customer") == {
        "handover_userid": "u1",
        "takeover_userid": "u2",
        "external_userid": ["e1", "e2"],
        "transfer_success_msg": "好",
    }
    assert "transfer_success_msg" not in body("transfer_customer", 1)
    assert body("get_groupmsg_task") == {"msgid": "msg1", "limit": 1000, "cursor": "CUR"}
    assert body("get_groupmsg_send_result") == {"msgid": "msg1", "userid": "u1", "limit": 50}
    assert body("remind_groupmsg_send") == {"msgid": "msg1"}
    assert body("cancel_groupmsg_send") == {"msgid": "msg1"}
    (oauth,) = calls_to(http, "auth/getuserinfo")
    assert query(oauth.request)["code"] == "CODE"
    assert query(oauth.request)["access_token"] == token_server.issued[0]


def test_wechatpy_auto_retry_is_off(make_client) -> None:
    assert make_client().auto_retry is False


@pytest.mark.parametrize("kind", ["502", "timeout"])
def test_a_failed_gettoken_before_a_mass_send_is_retried_not_outcome_unknown(
    kind, http, make_client, clock
) -> None:
    """The mass send never went out when only the token fetch failed: nothing is in doubt, so
    the client retries as for any busy WeCom instead of raising OutcomeUnknown."""
    http.get(API + "gettoken", **_busy(kind))
    http.get(API + "gettoken", json={**OK, "access_token": "TOKEN-A-" + "x" * 20, "expires_in": 7200})
    http.post(API + "externalcontact/add_msg_template", json={**OK, "msgid": "m3", "fail_list": []})
    answer = make_client(max_attempts=4).post("externalcontact/add_msg_template", data=TEMPLATE)
    assert answer["msgid"] == "m3"
    assert len(calls_to(http, "gettoken")) == 2
    assert len(calls_to(http, "externalcontact/add_msg_template")) == 1

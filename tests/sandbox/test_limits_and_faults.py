"""The per-API per-minute limit (45009) and fault injection."""

from __future__ import annotations

from app.clock import FrozenClock
from tests.sandbox.conftest import WeComApi

PATH = "externalcontact/get_follow_user_list"


def test_rate_limit_answers_45009_until_the_minute_ends(
    wecom_api: WeComApi, control, clock: FrozenClock
) -> None:
    clock.advance(60 - clock.time() % 60)  # start of a window
    control.post("/sandbox/config", json={"rate_limits": {PATH: 3}})
    token = wecom_api.token
    codes = [wecom_api.get(PATH, token=token)["errcode"] for _ in range(5)]
    assert codes == [0, 0, 0, 45009, 45009]
    assert wecom_api.get(PATH, token=token)["errmsg"].startswith("api freq out of limit")
    # Other APIs have their own budget (default 10 000 a minute).
    assert wecom_api.post("externalcontact/get_corp_tag_list", token=token)["errcode"] == 0
    clock.advance(59)
    assert wecom_api.get(PATH, token=token)["errcode"] == 45009
    clock.advance(1)
    assert wecom_api.get(PATH, token=token)["errcode"] == 0

    stats = control.get("/sandbox/stats").json
    assert stats["errors"]["45009"] == 4
    assert stats["api_calls"][PATH] == 8


def test_45009_blocks_for_a_full_minute_from_the_call_that_hit_the_limit(
    wecom_api: WeComApi, control, clock: FrozenClock
) -> None:
    # WeCom (global error codes, 45009): a per-minute limit is lifted one minute after it was
    # hit (在中频率后的1分钟后自动解除), not when the clock's minute ends.
    clock.advance(60 - clock.time() % 60 + 50)  # 10 s before a window ends
    control.post("/sandbox/config", json={"rate_limits": {PATH: 3}})
    token = wecom_api.token
    assert [wecom_api.get(PATH, token=token)["errcode"] for _ in range(4)] == [0, 0, 0, 45009]
    clock.advance(10)  # a new minute on the clock: still blocked
    assert wecom_api.get(PATH, token=token)["errcode"] == 45009
    clock.advance(49)
    assert wecom_api.get(PATH, token=token)["errcode"] == 45009
    clock.advance(1)  # one minute after the limit was hit
    assert [wecom_api.get(PATH, token=token)["errcode"] for _ in range(4)] == [0, 0, 0, 45009]


def test_default_rate_limit_covers_every_api(wecom_api: WeComApi, control, clock: FrozenClock) -> None:
    clock.advance(60 - clock.time() % 60)
    control.post("/sandbox/config", json={"rate_limit_per_minute": 2})
    assert [wecom_api.gettoken()["errcode"] for _ in range(3)] == [0, 0, 45009]


def test_errcode_fault_for_the_next_calls_only(wecom_api: WeComApi, control) -> None:
    token = wecom_api.token
    rule = control.post("/sandbox/faults", json={"path": PATH, "errcode": -1, "times": 2}).json[0]
    assert rule["errcode"] == -1
    answers = [wecom_api.get(PATH, token=token) for _ in range(3)]
    assert [a["errcode"] for a in answers] == [-1, -1, 0]
    assert answers[0]["errmsg"].startswith("system busy")
    assert control.get("/sandbox/faults").json[0]["hits"] == 2


def test_path_rule_leaves_other_apis_alone(wecom_api: WeComApi, control) -> None:
    token = wecom_api.token
    control.post("/sandbox/faults", json={"path": PATH, "errcode": -1})
    assert wecom_api.get(PATH, token=token)["errcode"] == -1
    assert wecom_api.post("externalcontact/get_corp_tag_list", token=token)["errcode"] == 0


def test_http_fault_answers_a_non_json_page(wecom_api: WeComApi, control) -> None:
    token = wecom_api.token
    control.post("/sandbox/faults", json={"path": "*", "http_status": 502, "times": 1})
    response = wecom_api.client.get(f"/cgi-bin/{PATH}", query_string={"access_token": token})
    assert response.status_code == 502
    assert response.json is None
    assert b"502" in response.data
    assert wecom_api.get(PATH, token=token)["errcode"] == 0
    assert control.get("/sandbox/stats").json["errors"] == {"http_502": 1}


def test_latency_fault_sleeps_on_the_sandbox_clock_then_answers(
    wecom_api: WeComApi, control, clock: FrozenClock
) -> None:
    token = wecom_api.token
    control.post("/sandbox/faults", json={"path": PATH, "latency_ms": 1500})
    before = clock.time()
    assert wecom_api.get(PATH, token=token)["errcode"] == 0
    assert clock.slept == [1.5]
    assert clock.time() == before + 1.5
    assert control.delete("/sandbox/faults").json == []
    wecom_api.get(PATH, token=token)
    assert clock.slept == [1.5]


def test_probability_fault_fires_on_some_calls(wecom_api: WeComApi, control) -> None:
    token = wecom_api.token
    control.post("/sandbox/faults", json={"path": PATH, "errcode": -1, "probability": 0.5})
    codes = [wecom_api.get(PATH, token=token)["errcode"] for _ in range(200)]
    assert 60 < codes.count(-1) < 140
    assert set(codes) == {0, -1}


def test_bad_fault_rules_are_refused(control) -> None:
    assert control.post("/sandbox/faults", json={"path": PATH}).status_code == 400
    assert control.post("/sandbox/faults", json={"http_status": 200}).status_code == 400
    assert control.post("/sandbox/faults", json={"errcode": -1, "colour": "red"}).status_code == 400
    rule = control.post("/sandbox/faults", json={"errcode": -1}).json[0]
    assert control.delete(f"/sandbox/faults/{rule['id']}").json == {"removed": True}
    assert control.delete(f"/sandbox/faults/{rule['id']}").status_code == 404

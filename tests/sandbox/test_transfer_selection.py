"""complete_transfers(external_userids=...): refuse some customers' pending transfers and accept
the others' (the demo refuses a few hand-overs this way)."""

from __future__ import annotations

from typing import Any

import pytest

from app.sandbox import Sandbox
from app.sandbox.errors import SandboxError
from tests.sandbox.conftest import WeComApi


def _pending(sandbox: Sandbox, wecom_api: WeComApi, count: int, config_id: str) -> list[str]:
    customers = [
        sandbox.platform.customer_adds(config_id=config_id).data["external_userid"] for _ in range(count)
    ]
    body = {"handover_userid": "zhangsan", "takeover_userid": "lisi", "external_userid": customers}
    assert wecom_api.post("externalcontact/transfer_customer", body)["errcode"] == 0
    return customers


def test_only_the_chosen_customers_transfers_end(
    sandbox: Sandbox, wecom_api: WeComApi, corp: dict[str, Any]
) -> None:
    first, second, third = _pending(sandbox, wecom_api, 3, corp["config_id"])
    refused = sandbox.platform.complete_transfers(fail_reason="customer_refused", external_userids=[second])
    assert [(e.event_type, e.data["external_userid"]) for e in refused] == [
        ("change_external_contact:transfer_fail", second)
    ]
    assert set(sandbox.state.transfers) == {first, third}
    assert sandbox.platform.complete_transfers(external_userids=["wmNobody"]) == []
    accepted = sandbox.platform.complete_transfers(external_userids=[first])
    assert [e.data["external_userid"] for e in accepted] == [first]
    assert ("lisi", first) in sandbox.state.relations and ("zhangsan", second) in sandbox.state.relations
    assert [e.data["external_userid"] for e in sandbox.platform.complete_transfers()] == [third]
    assert sandbox.state.transfers == {}


def test_the_control_api_passes_the_selection(
    sandbox: Sandbox, control, wecom_api: WeComApi, corp: dict[str, Any]
) -> None:
    first, second = _pending(sandbox, wecom_api, 2, corp["config_id"])
    answer = control.post("/sandbox/platform/complete_transfers", json={"external_userids": [second]})
    assert answer.status_code == 200, answer.json
    assert [item["external_userid"] for item in answer.json] == [second]
    assert set(sandbox.state.transfers) == {first}
    with pytest.raises(SandboxError):
        sandbox.platform.complete_transfers(external_userids=first)  # type: ignore[arg-type]

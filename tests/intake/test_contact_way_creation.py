"""Making a contact way exactly once against the live sandbox (app/intake/contact_ways.py): the
attempt marker before add_contact_way, and a run after a dead one asking WeCom (list_contact_way,
get_contact_way) for what that one made before calling again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.intake import contact_ways
from app.sandbox import SandboxConfig, SandboxServer, run_sandbox
from app.store import attempts, effects
from app.store.attempts import AttemptInProgress
from app.store.models import ContactWay, Effect
from app.wecom.client import WeComClient
from app.wecom.errors import OutcomeUnknown, WeComError
from workers.contact_way_jobs import create_contact_way

ADVISOR, STATE = "sh_a", "lp.SH01.RAV4"
ADD, LIST, GET = (f"externalcontact/{name}_contact_way" for name in ("add", "list", "get"))


@pytest.fixture()
def sandbox(clock) -> Iterator[SandboxServer]:
    """The sandbox on the test's clock, with two advisors who may own contact ways."""
    with run_sandbox(SandboxConfig(seed=5), clock) as server:
        server.state.add_employee("sh_a", "王芳")
        server.state.add_employee("sh_b", "李强")
        yield server


@pytest.fixture()
def app_config(app_config: dict[str, Any], sandbox: SandboxServer) -> dict[str, Any]:
    return {**app_config, "WECOM_API_BASE": sandbox.api_base}


def calls(sandbox: SandboxServer, path: str) -> int:
    return sandbox.state.stats()["api_calls"].get(path, 0)


def stored(svc) -> list[tuple[str, str, str]]:
    with svc.sessions() as session:
        return [
            (w.advisor_userid, w.state, w.config_id)
            for w in session.scalars(select(ContactWay).order_by(ContactWay.id))
        ]


def marker(svc) -> dict[str, Any] | None:
    return attempts.marker(svc.sessions, contact_ways.attempt_key(ADVISOR, STATE))


def lease_runs_out(svc) -> None:
    svc.clock.advance(svc.settings.JOB_TIMEOUT + contact_ways.LEASE_MARGIN + 1)


def killed(*_args: Any, **_kwargs: Any) -> None:
    raise SystemExit("the worker was killed")


def test_the_normal_path_calls_add_contact_way_once_and_leaves_no_marker(app, svc, sandbox) -> None:
    way, made = contact_ways.create(svc, ADVISOR, STATE)
    assert made
    [wecom_way] = sandbox.state.contact_ways.values()
    assert (way.config_id, way.qr_code) == (wecom_way.config_id, wecom_way.qr_code)
    assert (wecom_way.state, wecom_way.user, wecom_way.remark) == (STATE, [ADVISOR], contact_ways.REMARK)
    assert effects.recorded(svc.sessions, contact_ways.ledger_key(ADVISOR, STATE)) == {
        "config_id": way.config_id,
        "qr_code": way.qr_code,
    }
    assert marker(svc) is None
    with app.app_context():
        assert create_contact_way(ADVISOR, STATE) == way.config_id  # stored: WeCom not asked
    assert (calls(sandbox, ADD), calls(sandbox, LIST), calls(sandbox, GET)) == (1, 0, 0)
    assert stored(svc) == [(ADVISOR, STATE, way.config_id)]


def test_a_job_killed_between_wecoms_answer_and_the_ledger_adopts_that_contact_way(
    app, svc, sandbox, monkeypatch
) -> None:
    record = effects.record
    monkeypatch.setattr(effects, "record", killed)
    with app.app_context(), pytest.raises(SystemExit):
        create_contact_way(ADVISOR, STATE)
    [made] = sandbox.state.contact_ways  # WeCom made it; nothing of ours knows its config_id
    monkeypatch.setattr(effects, "record", record)
    assert (
        stored(svc) == [] and effects.recorded(svc.sessions, contact_ways.ledger_key(ADVISOR, STATE)) is None
    )
    assert marker(svc)["attempt"] == 1

    # A run while the dead one's lease is live does not call WeCom (RQ retries it later).
    with pytest.raises(AttemptInProgress):
        contact_ways.create(svc, ADVISOR, STATE)
    assert calls(sandbox, ADD) == 1 and calls(sandbox, LIST) == 0

    lease_runs_out(svc)
    with app.app_context():
        assert create_contact_way(ADVISOR, STATE) == made
    assert calls(sandbox, ADD) == 1  # not made again
    assert calls(sandbox, LIST) == 1 and calls(sandbox, GET) == 1
    assert list(sandbox.state.contact_ways) == [made]
    assert stored(svc) == [(ADVISOR, STATE, made)]
    assert effects.recorded(svc.sessions, contact_ways.ledger_key(ADVISOR, STATE))["reconciled"] is True
    assert marker(svc) is None
    way, new = contact_ways.create(svc, ADVISOR, STATE)
    assert (way.config_id, new) == (made, False)
    assert way.qr_code == sandbox.state.contact_ways[made].qr_code


def test_a_job_killed_before_the_call_leaves_the_next_run_to_make_it(app, svc, sandbox, monkeypatch) -> None:
    monkeypatch.setattr(WeComClient, "add_contact_way", killed)
    with pytest.raises(SystemExit):
        contact_ways.create(svc, ADVISOR, STATE)
    monkeypatch.undo()
    assert sandbox.state.contact_ways == {} and marker(svc)["attempt"] == 1
    lease_runs_out(svc)
    way, made = contact_ways.create(svc, ADVISOR, STATE)
    assert made
    assert calls(sandbox, LIST) == 1 and calls(sandbox, GET) == 0  # asked WeCom: nothing there
    assert calls(sandbox, ADD) == 1
    assert list(sandbox.state.contact_ways) == [way.config_id]
    assert stored(svc) == [(ADVISOR, STATE, way.config_id)]
    assert marker(svc) is None


def test_a_contact_way_of_another_advisor_or_remark_is_not_adopted(app, svc, sandbox, monkeypatch) -> None:
    """Ways with our state but another advisor, or our advisor and state but another remark (made
    by someone else in the same minutes), and a way stored for another pair: none is ours."""
    state = sandbox.state
    other_advisor = state.add_contact_way(
        {"type": 1, "scene": 2, "state": STATE, "user": ["sh_b"], "remark": contact_ways.REMARK}
    ).config_id
    other_remark = state.add_contact_way(
        {"type": 1, "scene": 2, "state": STATE, "user": [ADVISOR], "remark": "门店海报"}
    ).config_id
    contact_ways.create(svc, "sh_b", "lp.SH01.CAMRY")  # stored: not asked about again
    monkeypatch.setattr(WeComClient, "add_contact_way", killed)
    with pytest.raises(SystemExit):
        contact_ways.create(svc, ADVISOR, STATE)
    monkeypatch.undo()
    lease_runs_out(svc)

    way, made = contact_ways.create(svc, ADVISOR, STATE)
    assert made and way.config_id not in (other_advisor, other_remark)
    assert calls(sandbox, ADD) == 2  # sh_b's CAMRY code and ours
    assert calls(sandbox, GET) == 2  # the two decoys; the stored CAMRY code is skipped
    assert len(state.contact_ways) == 4
    assert [row[:2] for row in stored(svc)] == [("sh_b", "lp.SH01.CAMRY"), (ADVISOR, STATE)]


def test_two_live_workers_on_one_pair_make_one_contact_way(app, svc, sandbox, monkeypatch) -> None:
    """Two web processes that both found no job enqueue the same job id twice, and two workers
    run it at once. The second finds the first's live attempt and does not call WeCom."""
    add = WeComClient.add_contact_way
    second: list[BaseException] = []

    def first_worker_calling(client: WeComClient, data: dict[str, Any]) -> dict[str, Any]:
        try:  # the other worker, while this one waits for WeCom's answer
            contact_ways.create(svc, ADVISOR, STATE)
        except AttemptInProgress as exc:
            second.append(exc)
        return add(client, data)

    monkeypatch.setattr(WeComClient, "add_contact_way", first_worker_calling)
    way, made = contact_ways.create(svc, ADVISOR, STATE)
    assert made and len(second) == 1
    assert second[0].number == 1 and second[0].lease_until == svc.clock.now() + timedelta(
        seconds=svc.settings.JOB_TIMEOUT + contact_ways.LEASE_MARGIN
    )
    assert calls(sandbox, ADD) == 1 and len(sandbox.state.contact_ways) == 1
    assert stored(svc) == [(ADVISOR, STATE, way.config_id)]


def test_a_busy_wecom_ends_the_lease_so_the_next_run_asks_wecom_at_once(app, svc, sandbox) -> None:
    sandbox.state.faults.add({"path": ADD, "http_status": 503, "times": 1})
    with pytest.raises(OutcomeUnknown):  # a 5xx may have acted: the client does not call again
        contact_ways.create(svc, ADVISOR, STATE)
    assert sandbox.state.contact_ways == {} and calls(sandbox, ADD) == 1
    held = marker(svc)
    assert held["attempt"] == 1 and held["lease_until"] == svc.clock.now().isoformat()
    way, made = contact_ways.create(svc, ADVISOR, STATE)  # no waiting out the lease
    assert made and calls(sandbox, LIST) == 1
    assert list(sandbox.state.contact_ways) == [way.config_id]


def test_a_refused_call_made_nothing_and_drops_the_marker(app, svc, sandbox) -> None:
    with pytest.raises(WeComError) as refused:
        contact_ways.create(svc, "ghost", STATE)  # not a member: 60111
    assert refused.value.errcode == 60111
    assert attempts.marker(svc.sessions, contact_ways.attempt_key("ghost", STATE)) is None
    sandbox.state.add_employee("ghost", "新顾问")
    _, made = contact_ways.create(svc, "ghost", STATE)
    assert made and calls(sandbox, LIST) == 0  # nothing to ask WeCom about


def test_an_attempt_older_than_wecoms_listing_is_looked_for_as_far_back_as_it_reaches(
    app, svc, sandbox
) -> None:
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        session.add(
            Effect(
                key=contact_ways.attempt_key(ADVISOR, STATE),
                result={
                    "attempt": 3,
                    "since": (now - timedelta(days=100)).isoformat(),
                    "lease_until": (now - timedelta(days=99)).isoformat(),
                },
                created_at=now - timedelta(days=99, minutes=4),
            )
        )
    _, made = contact_ways.create(svc, ADVISOR, STATE)  # list_contact_way did not answer 40058
    assert made and calls(sandbox, LIST) == 1 and calls(sandbox, ADD) == 1
    assert sandbox.state.errors_by_path == {}
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ContactWay)) == 1

"""Live-sandbox fixtures for the campaign submission and results tests: the sandbox on the test's
clock (one FrozenClock for both: the confirm delay, reminders and rate windows move together),
advisors and customers with relations in WeCom, and the same roster in our store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from app.campaigns import store
from app.campaigns.model import CampaignSpec
from app.sandbox import SandboxConfig, SandboxServer, run_sandbox
from app.sandbox.models import Customer as WeComCustomer
from app.sandbox.models import Relation
from app.store.campaign_models import CampaignRecipient
from app.store.models import Advisor, Customer, Dealer, FollowRelation

ADVISORS = {"sh_a": "王芳", "sh_b": "李强", "sh_c": "陈静"}


@pytest.fixture()
def wecom(clock) -> Iterator[SandboxServer]:
    config = SandboxConfig(seed=31, retry_delay=0.05, mass_send_confirm_delay=600)
    with run_sandbox(config, clock) as server:
        yield server


def live_config(app_config: dict[str, Any], wecom: SandboxServer, **extra: Any) -> dict[str, Any]:
    """A test module's ``app_config`` fixture returns this: our app talking to the sandbox."""
    return {**app_config, "WECOM_API_BASE": wecom.api_base, **extra}


@pytest.fixture()
def corp(svc, wecom: SandboxServer) -> SandboxServer:
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        session.add(
            Dealer(code="SH01", name="上海浦东店", region="east", city="上海", lat=0.0, lon=0.0,
                   models=[], territory=[], updated_at=now)
        )  # fmt: skip
        session.flush()
        for userid, name in ADVISORS.items():
            session.add(
                Advisor(userid=userid, name=name, dealer_code="SH01", capacity_per_day=20,
                        max_open_leads=200, models=[], languages=[], segments=[], personas=[],
                        updated_at=now)
            )  # fmt: skip
    for userid, name in ADVISORS.items():
        wecom.state.add_employee(userid, name)
    return wecom


def customers(
    svc, wecom: SandboxServer, advisor: str, n: int, *, prefix: str, in_wecom: bool = True
) -> list[str]:
    """``n`` customers of ``advisor``: a relation in WeCom (unless ``in_wecom`` is False: only our
    store knows it, so WeCom puts them in fail_list) and an active follow relation in our store."""
    now = svc.clock.now()
    ids = [f"wm{prefix}{i:04d}" for i in range(n)]
    if in_wecom:
        with wecom.state.lock:
            for ext in ids:
                wecom.state.customers[ext] = WeComCustomer(ext, f"客户{ext}")
                wecom.state.relations[(advisor, ext)] = Relation(advisor, ext, wecom.state.now())
    with svc.sessions.begin() as session:
        for ext in ids:
            session.add(Customer(external_userid=ext, profile={}, created_at=now, updated_at=now))
        session.flush()
        for ext in ids:
            session.add(
                FollowRelation(advisor_userid=advisor, external_userid=ext, dealer_code="SH01",
                               status="active", tag_ids=[], added_at=now)
            )  # fmt: skip
    return ids


def create(svc, audience: str = "dealer(SH01)", name: str = "RAV4 试驾专场") -> int:
    spec = CampaignSpec.model_validate(
        {"name": name, "content": {"text": "您好，RAV4 试驾专场本周末开放预约"}, "audience": audience}
    )
    now = svc.clock.now()
    with svc.sessions() as session:
        made = store.plan(session, spec, actor_dealer=None, now=now)
        campaign = store.create(session, made, actor_dealer=None, now=now)
        session.commit()
        return campaign.id


def statuses(svc, campaign_id: int) -> dict[str, int]:
    with svc.sessions() as session:
        rows = session.execute(
            select(CampaignRecipient.status, func.count())
            .where(CampaignRecipient.campaign_id == campaign_id)
            .group_by(CampaignRecipient.status)
        )
        return dict(rows.all())


def submitted_to_wecom(wecom: SandboxServer) -> list[str]:
    """Every external_userid handed to WeCom over all add_msg_template calls (repeats kept)."""
    with wecom.state.lock:
        return [
            ext for send in wecom.state.mass_sends.values() for ext in send.external_userids + send.fail_list
        ]


def submit_killed_before_the_ledger(
    svc, campaign_id: int, advisor: str, batch_no: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run ``submit_batch`` in a process that dies after WeCom answered, before the ledger row."""
    from app.campaigns import submit
    from app.store import effects

    def killed(*_args: Any, **_kwargs: Any) -> None:
        raise SystemExit("killed before the ledger write")

    with monkeypatch.context() as patch:
        patch.setattr(effects, "record", killed)
        with pytest.raises(SystemExit):
            submit.submit_batch(svc, campaign_id, advisor, batch_no)


def submit_with_the_answer_lost(svc, wecom: SandboxServer, campaign_id: int) -> str:
    """Submit sh_a's first batch while a gateway loses add_msg_template's answer (a 502 after
    WeCom made the task): the client raises OutcomeUnknown. Returns the msgid WeCom made."""
    from app.campaigns import submit
    from app.wecom.errors import OutcomeUnknown

    before = set(wecom.state.mass_sends)
    wecom.state.faults.add(
        {"path": "externalcontact/add_msg_template", "http_status": 502, "after_effect": True, "times": 1}
    )
    with pytest.raises(OutcomeUnknown):
        submit.submit_batch(svc, campaign_id, "sh_a", 0)
    [made] = set(wecom.state.mass_sends) - before
    return made

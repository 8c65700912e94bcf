"""A batch bigger than one page of WeCom's answers (get_groupmsg_send_result pages by 1000):
the task an attempt killed before its ledger write made is adopted with every customer in it,
not with the first page only (the rest would wrongly be reported as WeCom's fail_list)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app.campaigns import submit
from app.store.campaign_models import CampaignBatch
from tests.campaigns.live import (
    corp,
    create,
    customers,
    live_config,
    statuses,
    submit_killed_before_the_ledger,
    wecom,
)

__all__ = ["corp", "wecom"]  # fixtures

CUSTOMERS = 1200


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom) -> dict[str, Any]:
    return live_config(app_config, wecom)  # the default batch: up to 10,000 customers


def test_an_orphaned_task_of_more_than_a_page_is_adopted_whole(svc, corp, monkeypatch) -> None:
    everyone = customers(svc, corp, "sh_a", CUSTOMERS, prefix="big")
    campaign_id = create(svc)
    submit.start(svc, campaign_id)
    submit_killed_before_the_ledger(svc, campaign_id, "sh_a", 0, monkeypatch)
    [made] = corp.state.mass_sends
    assert len(corp.state.mass_sends[made].external_userids) == CUSTOMERS

    svc.clock.advance(svc.settings.JOB_TIMEOUT + 31)  # the dead attempt's lease runs out
    assert submit.submit_batch(svc, campaign_id, "sh_a", 0) == "submitted"

    assert list(corp.state.mass_sends) == [made]  # adopted, not submitted again
    with svc.sessions() as session:
        batch = session.scalars(select(CampaignBatch).where(CampaignBatch.campaign_id == campaign_id)).one()
    assert (batch.status, batch.msgid, batch.fail_list) == ("submitted", made, [])
    assert statuses(svc, campaign_id) == {"submitted": len(everyone)}

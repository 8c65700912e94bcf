"""A batch our own rate limiter turns away is rescheduled for when the slot frees, not left to
RQ's fixed retry intervals (which starved the limit: bench/campaigns.py)."""

from __future__ import annotations

import time

from rq.registry import ScheduledJobRegistry

from app.campaigns import submit
from app.wecom.errors import RateLimited
from workers import campaign_jobs
from workers.queues import BULK, queue


def test_a_rate_limited_batch_comes_back_when_the_slot_frees(app, svc, monkeypatch) -> None:
    def limited(*_args, **_kwargs):
        raise RateLimited("externalcontact/add_msg_template", waited=10.0, retry_after=42.0)

    monkeypatch.setattr(submit, "submit_batch", limited)
    with app.app_context():
        outcome = campaign_jobs.submit_batch(7, "sh01.a01@x", 3)
    assert outcome.startswith("rate limited") and "42.0 s" in outcome

    bulk = queue(BULK, svc.redis)
    registry = ScheduledJobRegistry(queue=bulk)
    [job_id] = registry.get_job_ids()
    assert job_id.startswith("campaign-7-sh01_a01_x-3-later-")
    job = bulk.fetch_job(job_id)
    assert job.func_name == "workers.campaign_jobs.submit_batch" and job.args == [7, "sh01.a01@x", 3]
    # RQ's scheduler runs on real time (the job is due when the limiter's window frees a slot).
    due = registry.get_scheduled_time(job_id).timestamp()
    assert 40 <= due - time.time() <= 44

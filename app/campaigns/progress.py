"""A campaign's progress once its submission started: customers per outcome, in total, per dealer
and per advisor (SQL aggregates over ``campaign_recipients``), and the advisors' tasks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.campaigns.audience import NO_DEALER
from app.store.campaign_models import RECIPIENT_STATUSES, CampaignBatch, CampaignRecipient

R = CampaignRecipient


def _blank() -> dict[str, int]:
    return {status: 0 for status in RECIPIENT_STATUSES}


def figures(session: Session, campaign_id: int) -> dict[str, Any] | None:
    """``{targeted, submitted, sent, not_sent, not_friend, over_limit, failed, cancelled, by_dealer:
    {code: {…}}, by_advisor: {userid: {…}}, tasks: {state: n}, reminders}``; None before the
    submission started. ``targeted`` is the frozen audience (every row); the other figures count
    customers by where they are now (``submitted``: handed to WeCom, no result yet; ``queued``: not
    yet handed over)."""
    rows = session.execute(
        select(R.dealer_code, R.advisor_userid, R.status, func.count())
        .where(R.campaign_id == campaign_id)
        .group_by(R.dealer_code, R.advisor_userid, R.status)
    ).all()
    if not rows:
        return None
    total, by_dealer, by_advisor = _blank(), {}, {}
    for dealer, advisor, status, n in rows:
        for bucket in (total, by_dealer.setdefault(dealer or NO_DEALER, _blank()),
                       by_advisor.setdefault(advisor, _blank())):  # fmt: skip
            bucket[status] = bucket.get(status, 0) + n
    for bucket in (total, *by_dealer.values(), *by_advisor.values()):
        bucket["queued"] = bucket["targeted"]  # not yet handed to WeCom
        bucket["targeted"] = sum(bucket[status] for status in RECIPIENT_STATUSES)
    tasks = dict(
        session.execute(
            select(func.coalesce(CampaignBatch.task_state, CampaignBatch.status), func.count())
            .where(CampaignBatch.campaign_id == campaign_id)
            .group_by(func.coalesce(CampaignBatch.task_state, CampaignBatch.status))
        ).all()
    )
    reminders = session.scalar(
        select(func.coalesce(func.sum(CampaignBatch.reminded_count), 0)).where(
            CampaignBatch.campaign_id == campaign_id
        )
    )
    return {
        **total,
        "by_dealer": by_dealer,
        "by_advisor": by_advisor,
        "tasks": tasks,
        "reminders": int(reminders),
    }

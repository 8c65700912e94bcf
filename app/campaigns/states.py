"""The campaign state machine.

    draft ──▶ scheduled ──▶ submitting ──▶ waiting ──▶ done
      │           │
      └───────────┴──▶ cancelled

- ``draft``: stored, not to be sent yet (``POST /api/campaigns?draft=1``); ``schedule`` moves it on.
- ``scheduled``: to be submitted at ``send_at``.
- ``submitting``: a worker is creating the advisors' mass-send tasks (add_msg_template).
- ``waiting``: waiting for advisors to confirm in WeCom (results, reminders).
- ``done`` / ``cancelled``: final.

A move is one conditional ``UPDATE campaigns SET state = :to WHERE id = :id AND state = :from``:
of two workers that both read ``scheduled`` and try to move it on, one updates the row and the
other updates nothing and is told (``StateConflict``). The transition row is written in the same
transaction. Cancelling a campaign already handed to WeCom is for the submission step (it has to
stop the advisors' tasks too), so only draft and scheduled campaigns can be cancelled here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.store.campaign_models import Campaign, CampaignTransition

DRAFT = "draft"
SCHEDULED = "scheduled"
SUBMITTING = "submitting"
WAITING = "waiting"  # waiting for advisors to confirm the mass send
DONE = "done"
CANCELLED = "cancelled"

ALL = (DRAFT, SCHEDULED, SUBMITTING, WAITING, DONE, CANCELLED)
FINAL = (DONE, CANCELLED)
TRANSITIONS: dict[str, frozenset[str]] = {
    DRAFT: frozenset({SCHEDULED, CANCELLED}),
    SCHEDULED: frozenset({SUBMITTING, CANCELLED}),
    SUBMITTING: frozenset({WAITING}),
    WAITING: frozenset({DONE}),
    DONE: frozenset(),
    CANCELLED: frozenset(),
}


class StateConflict(RuntimeError):
    """The move is not allowed from the campaign's state (or another worker moved it first)."""

    def __init__(self, campaign_id: int, current: str | None, wanted: str) -> None:
        self.campaign_id, self.current, self.wanted = campaign_id, current, wanted
        if current is None:
            message = f"campaign {campaign_id} does not exist"
        else:
            allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "nothing (final)"
            message = (
                f"campaign {campaign_id} is {current}: it cannot become {wanted} (from {current}: {allowed})"
            )
        super().__init__(message)


def allowed(current: str, wanted: str) -> bool:
    return wanted in TRANSITIONS.get(current, frozenset())


def move(
    session: Session,
    campaign_id: int,
    from_state: str | tuple[str, ...],
    to_state: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> str:
    """Move the campaign from one of ``from_state`` to ``to_state`` (a conditional UPDATE; the
    caller commits). Returns the state it left. StateConflict if the move is not allowed or the
    campaign is no longer in a ``from_state`` (someone else moved it)."""
    sources = (from_state,) if isinstance(from_state, str) else from_state
    sources = tuple(state for state in sources if allowed(state, to_state))
    current = session.get(Campaign, campaign_id, populate_existing=True)
    if current is None:
        raise StateConflict(campaign_id, None, to_state)
    if current.state not in sources:
        raise StateConflict(campaign_id, current.state, to_state)
    left = current.state
    result = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.state == left)
        .values(state=to_state, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        session.expire(current)
        raise StateConflict(campaign_id, session.get(Campaign, campaign_id).state, to_state)
    session.expire(current)
    session.add(
        CampaignTransition(
            campaign_id=campaign_id, from_state=left, to_state=to_state, actor=actor, reason=reason, at=now
        )
    )
    session.flush()
    return left

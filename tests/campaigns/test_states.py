"""The state machine: allowed moves, refused moves, and two workers racing for one move."""

from __future__ import annotations

import threading

import pytest

from app.campaigns import states
from app.store.campaign_models import Campaign, CampaignTransition


@pytest.fixture()
def campaign_id(svc, clock):
    with svc.sessions() as session:
        row = Campaign(
            name="c", spec={}, scope_dealer=None, state=states.DRAFT, created_by="hq",
            send_at=clock.now(), audience=None, created_at=clock.now(), updated_at=clock.now(),
        )  # fmt: skip
        session.add(row)
        session.commit()
        return row.id


def test_the_whole_path_and_its_history(svc, clock, campaign_id):
    path = [states.SCHEDULED, states.SUBMITTING, states.WAITING, states.DONE]
    with svc.sessions() as session:
        current = states.DRAFT
        for target in path:
            assert (
                states.move(session, campaign_id, current, target, actor="worker", now=clock.now()) == current
            )
            session.commit()
            current = target
        assert session.get(Campaign, campaign_id).state == states.DONE
        moves = session.query(CampaignTransition).order_by(CampaignTransition.id).all()
        assert [(m.from_state, m.to_state) for m in moves] == list(
            zip([states.DRAFT, *path[:-1]], path, strict=True)
        )


@pytest.mark.parametrize(
    ("walk", "target"),
    [
        ([], states.SUBMITTING),  # draft cannot skip scheduling
        ([], states.DONE),
        ([states.SCHEDULED, states.SUBMITTING], states.CANCELLED),  # handed to WeCom: a later step
        ([states.CANCELLED], states.SCHEDULED),  # final
        ([states.SCHEDULED], states.DRAFT),
    ],
)
def test_invalid_moves_conflict(svc, clock, campaign_id, walk, target):
    with svc.sessions() as session:
        current = states.DRAFT
        for step in walk:
            states.move(session, campaign_id, current, step, actor="t", now=clock.now())
            current = step
        session.commit()
        with pytest.raises(states.StateConflict) as caught:
            states.move(session, campaign_id, current, target, actor="t", now=clock.now())
        assert caught.value.current == current
        assert session.get(Campaign, campaign_id, populate_existing=True).state == current


def test_a_stale_expectation_conflicts(svc, clock, campaign_id):
    with svc.sessions() as session:
        with pytest.raises(states.StateConflict):
            states.move(session, campaign_id, states.SCHEDULED, states.SUBMITTING, actor="t", now=clock.now())
        with pytest.raises(states.StateConflict, match="does not exist"):
            states.move(session, 999999, states.DRAFT, states.SCHEDULED, actor="t", now=clock.now())


def test_two_workers_one_move(svc, clock, campaign_id):
    with svc.sessions() as session:
        states.move(session, campaign_id, states.DRAFT, states.SCHEDULED, actor="t", now=clock.now())
        session.commit()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def worker() -> None:
        with svc.sessions() as session:
            session.get(Campaign, campaign_id)  # all read "scheduled"
            barrier.wait()
            try:
                states.move(
                    session, campaign_id, states.SCHEDULED, states.SUBMITTING, actor="w", now=clock.now()
                )
                session.commit()
                outcomes.append("moved")
            except states.StateConflict:
                session.rollback()
                outcomes.append("conflict")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 3 + ["moved"]
    with svc.sessions() as session:
        moves = session.query(CampaignTransition).filter_by(to_state=states.SUBMITTING).count()
        assert moves == 1

"""Helpers of the insight tests: customers in the store, and the interaction log read back."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.store.customers import upsert_customer
from app.store.models import Customer, Interaction

AUTH = {"Authorization": "Bearer sandbox-hq-token"}


@pytest.fixture()
def customer(svc) -> str:
    """A stored customer with a profile of its own (the intent must be added, not replace it)."""
    with svc.sessions.begin() as session:
        upsert_customer(
            session, "wm_c1", svc.clock.now(), name="张三", profile={"model": "RAV4", "city": "上海"}
        )
    return "wm_c1"


def logged(svc, kind: str, external_userid: str | None = None) -> list[Interaction]:
    with svc.sessions() as session:
        stmt = select(Interaction).where(Interaction.kind == kind).order_by(Interaction.id)
        if external_userid:
            stmt = stmt.where(Interaction.external_userid == external_userid)
        return list(session.scalars(stmt))


def profile_of(svc, external_userid: str) -> dict:
    with svc.sessions() as session:
        return session.get(Customer, external_userid).profile

"""Roster rows for tests: a dealer and an advisor with plain defaults, and one call that stores
them (dealers first: advisors reference them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from app.store.models import Advisor, Dealer


def dealer(
    code: str,
    now: datetime,
    *,
    name: str | None = None,
    region: str = "east",
    city: str = "上海",
    lat: float = 31.2,
    lon: float = 121.5,
    models: Iterable[str] = ("RAV4",),
    territory: Iterable[str] = (),
    manager: str | None = None,
) -> Dealer:
    return Dealer(
        code=code,
        name=name or f"{city}{code}店",
        region=region,
        city=city,
        lat=lat,
        lon=lon,
        models=list(models),
        territory=list(territory),
        manager_userid=manager,
        updated_at=now,
    )


def advisor(
    userid: str,
    now: datetime,
    *,
    name: str | None = None,
    dealer: str = "SH01",
    models: Iterable[str] = ("RAV4",),
    languages: Iterable[str] = (),
    segments: Iterable[str] = (),
    personas: Iterable[str] = (),
    capacity_per_day: int = 20,
    max_open_leads: int = 200,
    seniority: int = 0,
    active: bool = True,
) -> Advisor:
    return Advisor(
        userid=userid,
        name=name or userid,
        dealer_code=dealer,
        active=active,
        capacity_per_day=capacity_per_day,
        max_open_leads=max_open_leads,
        models=list(models),
        languages=list(languages),
        segments=list(segments),
        personas=list(personas),
        seniority=seniority,
        updated_at=now,
    )


def store(svc, dealers: Iterable[Dealer], advisors: Iterable[Advisor]) -> None:
    with svc.sessions.begin() as session:
        session.add_all(list(dealers))
        session.flush()
        session.add_all(list(advisors))

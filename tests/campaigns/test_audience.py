"""The audience in SQL on the seeded store (SQLite, or PostgreSQL with DATABASE_URL), checked
against hand-made cases and against the filter evaluated in Python over random data."""

from __future__ import annotations

import pytest

from app.campaigns.audience import AudienceError, count_audience, parse, resolve_audience
from tests.campaigns.seed import add, expected, seed_random, seed_roster


@pytest.fixture()
def session(svc):
    with svc.sessions() as session:
        seed_roster(session)
        yield session


def customers(rows):
    return {r.external_userid: (r.advisor_userid, r.dealer_code) for r in rows}


def test_hand_made_cases(session):
    add(session, "c1", "sh_a1", tags=["t_rav4"], profile={"segment": "prospect"})
    add(session, "c2", "hz_a1", tags=["t_rav4", "t_event"], profile={"segment": "prospect"})
    add(
        session, "c3", "bj_a1", tags=["t_rav4_old"], profile={"segment": "prospect"}
    )  # deleted tag, same name
    add(session, "c4", "sh_a2", tags=["t_rav4"], profile={"segment": "owner"})
    add(session, "c5", "sh_a1", tags=["t_rav4"], profile={"segment": "prospect"}, status="lost")
    add(session, "c6", "sh_gone", tags=["t_rav4"], profile={"segment": "prospect"})  # inactive advisor
    add(session, "c7", "sh_a1", tags=["t_rav4"], profile={"segment": "prospect"}, added_days_ago=40)
    # c8: two advisors; the most recently added active relation wins
    add(session, "c8", "sh_a1", tags=["t_rav4"], profile={"segment": "prospect"}, added_days_ago=5)
    add(session, "c8", "hz_a1", tags=["t_rav4"], added_days_ago=2)
    add(session, "c8", "bj_a1", tags=["t_rav4"], added_days_ago=1, status="lost")

    rows = resolve_audience(session, "tag(意向车型:RAV4) and stage(prospect)", None)
    assert customers(rows) == {
        "c1": ("sh_a1", "SH01"),
        "c2": ("hz_a1", "HZ01"),
        "c3": ("bj_a1", "BJ01"),
        "c7": ("sh_a1", "SH01"),
        "c8": ("hz_a1", "HZ01"),
    }
    flt = "tag(意向车型:RAV4) and stage(prospect) and not tag(活动:试驾专场) and region(east) and added_since(2026-10-01)"
    assert set(customers(resolve_audience(session, flt, None))) == {"c1", "c8"}
    # scope: only SH01's relations, so c8 goes through its SH01 advisor
    assert customers(resolve_audience(session, "tag(意向车型:RAV4)", "SH01")) == {
        "c1": ("sh_a1", "SH01"),
        "c4": ("sh_a2", "SH01"),
        "c7": ("sh_a1", "SH01"),
        "c8": ("sh_a1", "SH01"),
    }
    counts = count_audience(session, "tag(意向车型:RAV4)", None)
    assert counts.total == 6
    assert counts.by_dealer == {"BJ01": 1, "HZ01": 2, "SH01": 3}
    assert counts.by_advisor == {"bj_a1": 1, "hz_a1": 2, "sh_a1": 2, "sh_a2": 1}


def test_profile_atoms_and_missing_values(session):
    add(session, "p1", "sh_a1", profile={"model": "rav4", "intent_band": "high"})
    add(session, "p2", "sh_a1", profile={"model": "BZ4X", "intent": 55})
    add(session, "p3", "sh_a1", profile={"intent": 12.5})
    add(session, "p4", "sh_a1", profile={})
    add(session, "p5", "sh_a1", profile={"intent": "n/a"})  # not a number: no band
    add(session, "p6", "bj_a1", profile={"segment": "lost"}, dealer=None)  # dealer from the advisor

    def who(text, scope=None):
        return set(customers(resolve_audience(session, text, scope)))

    assert who("model(RAV4)") == {"p1"}
    assert who("not model(RAV4)") == {"p2", "p3", "p4", "p5", "p6"}
    assert who("intent(high)") == {"p1"}
    assert who("intent(medium, low)") == {"p2", "p3"}
    assert who("not intent(low, medium, high)") == {"p4", "p5", "p6"}
    assert who("dealer(BJ01) and region(north) and stage(战败)") == {"p6"}
    assert who("not stage(prospect)", "BJ01") == {"p6"}


def test_unknown_names_are_errors_with_their_column(session):
    for text, column, fragment in [
        ("model(X) and tag(意向车型:Camry)", 14, "unknown tag"),
        ("dealer(XX01)", 1, "unknown dealer"),
        ("not region(west)", 5, "unknown region"),
    ]:
        with pytest.raises(AudienceError) as caught:
            resolve_audience(session, text, None)
        assert caught.value.column == column
        assert fragment in caught.value.message


FILTERS = [
    "tag(意向车型:RAV4)",
    "tag(意向车型:RAV4, 意向车型:BZ4X) and not tag(活动:试驾专场)",
    "stage(prospect, intent) and intent(medium, high)",
    "not (model(RAV4) or tag(客户等级:VIP)) and added_since(2026-09-20)",
    "region(east) and not dealer(HZ01) or intent(high) and stage(owner)",
    "not intent(low)",
    "model(COROLLA) and not stage(lost)",
]


@pytest.mark.parametrize("scope", [None, "SH01", "BJ01"])
def test_sql_matches_the_filter_evaluated_in_python(session, scope):
    relations = seed_random(session, 400)
    for text in FILTERS:
        flt = parse(text)
        got = customers(resolve_audience(session, flt, scope))
        assert got == expected(relations, flt, scope), text
        counts = count_audience(session, flt, scope)
        assert counts.total == len(got)
        assert sum(counts.by_advisor.values()) == len(got)

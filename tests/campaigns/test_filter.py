"""The audience filter grammar: parsing, canonical text, errors with their column."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.campaigns.audience import AudienceError, Facts, parse


def test_parses_the_issue_example_and_prints_it_back():
    text = "tag(意向车型:RAV4) and stage(prospect) and not tag(活动:试驾专场) and region(east) and added_since(2026-10-01)"
    flt = parse(text)
    assert str(flt) == text
    assert str(parse(str(flt))) == text
    assert [a.kind for a in flt.atoms()] == ["tag", "stage", "tag", "region", "added_since"]


def test_precedence_lists_case_and_full_width():
    flt = parse("MODEL(rav4, bz4x) OR tag（意向车型：RAV4） AND NOT intent(High)")
    assert str(flt) == "model(RAV4, BZ4X) or tag(意向车型:RAV4) and not intent(high)"
    assert str(parse("(model(RAV4) or dealer(sh01)) and stage(潜客)")) == (
        "(model(RAV4) or dealer(SH01)) and stage(prospect)"
    )
    assert parse('tag("客户等级:V I P")').atoms()[0].values == ("客户等级:V I P",)


def test_added_since_is_china_midnight_or_an_offset_time():
    assert parse("added_since(2026-10-01)").atoms()[0].since == datetime(2026, 9, 30, 16, tzinfo=UTC)
    assert parse("added_since(2026-10-01T08:00:00+08:00)").atoms()[0].since == datetime(
        2026, 10, 1, tzinfo=UTC
    )


def test_evaluates_in_python():
    flt = parse("tag(意向车型:RAV4) and not tag(活动:试驾专场) and intent(medium, high)")
    assert flt.matches(Facts(tags=frozenset({"意向车型:RAV4"}), band="high"))
    assert not flt.matches(Facts(tags=frozenset({"意向车型:RAV4", "活动:试驾专场"}), band="high"))
    assert not flt.matches(Facts(tags=frozenset({"意向车型:RAV4"})))
    assert parse("not model(RAV4)").matches(Facts())
    assert parse("dealer(SH01) or dealer(HZ01)").dealers() == {"SH01", "HZ01"}


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("", 1, "empty"),
        ("tag(RAV4)", 5, "is not a tag"),
        ("stage(buyer)", 7, "unknown stage"),
        ("intent(hot)", 8, "unknown intent band"),
        ("colour(red)", 1, "unknown atom"),
        ("tag(a:b) and", 13, "ends where"),
        ("(tag(a:b)", 10, "expected ) to close the ( at column 1"),
        ("tag(a:b))", 9, "nothing to close"),
        ("tag(a:b) tag(c:d)", 10, "expected `and`, `or`"),
        ("model()", 7, "expected a value"),
        ("model(RAV4 BZ4X)", 12, "expected , or )"),
        ("model RAV4", 7, "expected ( after model"),
        ("added_since(yesterday)", 13, "is not a date"),
        ("added_since(2026-10-01T08:00:00)", 13, "needs a UTC offset"),
        ("added_since(2026-10-01, 2026-10-02)", 25, "one date"),
        ('tag("a:b)', 5, "unclosed quote"),
        ("and model(X)", 1, "unexpected 'and'"),
    ],
)
def test_errors_carry_the_column(text, column, fragment):
    with pytest.raises(AudienceError) as caught:
        parse(text)
    assert caught.value.column == column, str(caught.value)
    assert fragment in caught.value.message

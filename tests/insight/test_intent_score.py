"""The lead intent score: weights × min(count, cap), scaling, bands, configuration errors."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings
from app.insight.intent import band_of, parse_weights, score_of

BASE = {"SCRM_MODE": "test"}


def settings(**overrides: str):
    return load_settings(environ={**BASE, **overrides})


def test_designs_example_five_clicks_and_a_favourite_is_70_and_high() -> None:
    s = settings()
    score = score_of({"link_opened": 5, "favourite": 1}, s)
    assert score == 70.0
    assert band_of(score, s) == "high"


@pytest.mark.parametrize(
    ("counts", "score"),
    [
        ({}, 0.0),
        ({"link_opened": 1}, 10.0),
        ({"link_opened": 9}, 50.0),  # capped at 5 opens
        ({"favourite": 3}, 20.0),  # capped at 1
        ({"test_drive_booked": 1}, 40.0),
        ({"test_drive_booked": 1, "store_visit": 1}, 70.0),
        ({"reply_received": 2, "enquiry": 1}, 25.0),
        ({"unweighted_kind": 50}, 0.0),
        # 50 + 20 + 45 + 20 + 40 + 40 + 60 = 275 raw points: the score stops at 100
        (
            {
                "link_opened": 5,
                "favourite": 1,
                "enquiry": 3,
                "reply_received": 4,
                "quote_requested": 2,
                "test_drive_booked": 1,
                "store_visit": 2,
            },
            100.0,
        ),
    ],
)
def test_default_weights(counts: dict[str, int], score: float) -> None:
    assert score_of(counts, settings()) == score


def test_scaling_by_the_full_score_and_rounding() -> None:
    s = settings(INTENT_FULL_SCORE="200")
    assert score_of({"link_opened": 5, "favourite": 1}, s) == 35.0
    s = settings(INTENT_WEIGHTS="a=1:10", INTENT_FULL_SCORE="3")
    assert score_of({"a": 1}, s) == 33.3
    assert score_of({"a": 2}, s) == 66.7
    assert score_of({"a": 10}, s) == 100.0


def test_custom_weights_and_caps() -> None:
    s = settings(INTENT_WEIGHTS="link_opened=2.5:4, store_visit=50:1", INTENT_FULL_SCORE="60")
    assert s.intent_weights["link_opened"].weight == 2.5
    assert score_of({"link_opened": 10, "store_visit": 2}, s) == round(100 * (2.5 * 4 + 50) / 60, 1)


@pytest.mark.parametrize(
    ("score", "band"),
    [(0, "low"), (39.9, "low"), (40, "medium"), (69.9, "medium"), (70, "high"), (100, "high")],
)
def test_default_bands(score: float, band: str) -> None:
    assert band_of(score, settings()) == band


def test_custom_bands() -> None:
    s = settings(INTENT_BANDS=" 20 , 90 ")
    assert [band_of(x, s) for x in (19.9, 20, 89.9, 90)] == ["low", "medium", "medium", "high"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("INTENT_WEIGHTS", "link_opened=10", "not kind=weight:cap"),
        ("INTENT_WEIGHTS", "link_opened:10=5", "not kind=weight:cap"),
        ("INTENT_WEIGHTS", "link_opened=ten:5", "not a number"),
        ("INTENT_WEIGHTS", "link_opened=-1:5", "0 or more"),
        ("INTENT_WEIGHTS", "link_opened=nan:5", "0 or more"),
        ("INTENT_WEIGHTS", "link_opened=10:0", "cap must be a whole number 1 or more"),
        ("INTENT_WEIGHTS", "link_opened=10:-2", "cap must be a whole number 1 or more"),
        ("INTENT_WEIGHTS", "link_opened=10:1.5", "cap must be a whole number 1 or more"),
        ("INTENT_WEIGHTS", "Link Opened=10:5", "not an interaction kind"),
        ("INTENT_WEIGHTS", "a=1:1,a=2:2", "listed twice"),
        ("INTENT_WEIGHTS", "intent_changed=10:1", "cannot be weighted"),
        ("INTENT_WEIGHTS", " , ", "at least one"),
        ("INTENT_BANDS", "40", "two scores"),
        ("INTENT_BANDS", "40,70,90", "two scores"),
        ("INTENT_BANDS", "low,high", "two scores"),
        ("INTENT_BANDS", "70,40", "0 < medium from < high from ≤ 100"),
        ("INTENT_BANDS", "0,70", "0 < medium from < high from ≤ 100"),
        ("INTENT_BANDS", "40,101", "0 < medium from < high from ≤ 100"),
        ("INTENT_FULL_SCORE", "0", "above 0"),
        ("INTENT_FULL_SCORE", "-5", "above 0"),
        ("INTENT_FULL_SCORE", "lots", "INTENT_FULL_SCORE"),
    ],
)
def test_bad_intent_configuration_stops_start_up(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=key) as caught:
        settings(**{key: value})
    assert message in str(caught.value)


def test_parse_weights_accepts_spaces_and_a_trailing_comma() -> None:
    parsed = parse_weights(" link_opened = 10 : 5 , favourite=20:1, ")
    assert {k: (w.weight, w.cap) for k, w in parsed.items()} == {"link_opened": (10, 5), "favourite": (20, 1)}

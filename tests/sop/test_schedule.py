"""Step times: the `at` syntax, working and quiet hours, and step_due (China time)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from app.config import ConfigError, load_settings
from app.sop.schedule import (
    CHINA,
    StepOffset,
    Window,
    allowed_intervals,
    check_hours,
    parse_offset,
    parse_window,
    step_due,
)

WORK = parse_window("09:00-21:00")
QUIET = parse_window("22:00-08:00")


def cn(*parts: int) -> datetime:
    """A China-time wall clock reading as an aware UTC datetime."""
    return datetime(*parts, tzinfo=CHINA).astimezone(UTC)


def due(enrolled: datetime, at: str, work: Window = WORK, quiet: Window = QUIET) -> datetime:
    result = step_due(enrolled, parse_offset(at), work, quiet)
    assert result.tzinfo is not None and result.utcoffset() == timedelta(0)
    return result


# -- the `at` syntax --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "offset", "canonical"),
    [
        ("day 0", StepOffset(), "day 0"),
        ("Day  0", StepOffset(), "day 0"),
        ("+0d", StepOffset(), "day 0"),
        ("+3d", StepOffset(days=3), "+3d"),
        ("+1d 10:00", StepOffset(days=1, clock=time(10, 0)), "+1d 10:00"),
        ("+30D 9:05", StepOffset(days=30, clock=time(9, 5)), "+30d 09:05"),
        ("+2h", StepOffset(hours=2), "+2h"),
        ("+23h", StepOffset(hours=23), "+23h"),
    ],
)
def test_offsets_parse_to_a_structure_and_a_canonical_text(
    text: str, offset: StepOffset, canonical: str
) -> None:
    assert parse_offset(text) == offset
    assert str(offset) == canonical
    assert parse_offset(canonical) == offset


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+1d 25:00", "bad time '25:00': hours are 00-23 and minutes 00-59"),
        ("+1d 10:60", "bad time '10:60': hours are 00-23 and minutes 00-59"),
        ("+1d 10点", "bad time '10点': write HH:MM, e.g. 10:00"),
        ("+0d 10:00", "'+0d 10:00': a time of day needs +1d or later (day 0 means at once)"),
        ("+0h", "'+0h': hours are 1-23 (for a day or more write +Nd)"),
        ("+24h", "'+24h': hours are 1-23 (for a day or more write +Nd)"),
        ("+366d", "'+366d': at most +365d"),
        ("day 1", "bad step time 'day 1': write `day 0`, `+1d 10:00`, `+3d` or `+2h`"),
        ("tomorrow", "bad step time 'tomorrow': write `day 0`, `+1d 10:00`, `+3d` or `+2h`"),
    ],
)
def test_bad_offsets_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_offset(text)
    assert str(caught.value) == message


def test_sort_minutes_orders_the_shapes() -> None:
    order = ["day 0", "+2h", "+23h", "+1d", "+1d 10:00", "+3d", "+3d 09:00"]
    minutes = [parse_offset(text).sort_minutes for text in order]
    assert minutes == sorted(minutes) and len(set(minutes)) == len(minutes)


def test_windows() -> None:
    assert (WORK.start, WORK.end, WORK.wraps) == (time(9), time(21), False)
    assert (
        QUIET.wraps
        and QUIET.contains(time(23))
        and QUIET.contains(time(7, 59))
        and not QUIET.contains(time(8))
    )
    assert WORK.contains(time(9)) and not WORK.contains(time(21))
    assert str(QUIET) == "22:00-08:00"
    for bad, message in [
        ("9-21", "bad time '9': write HH:MM"),
        ("09:00", "write HH:MM-HH:MM"),
        ("09:00-09:00", "start and end are the same time"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_window(bad)
    with pytest.raises(ValueError, match="must end after it starts"):
        parse_window("21:00-09:00", may_wrap=False)
    with pytest.raises(ValueError, match="lie entirely inside quiet hours"):
        check_hours(parse_window("09:00-21:00"), parse_window("08:00-22:00"))


def test_settings_read_and_check_the_hours() -> None:
    settings = load_settings({"SCRM_MODE": "test"}, environ={})
    assert (settings.sop_working_hours, settings.sop_quiet_hours) == (WORK, QUIET)
    custom = load_settings(
        {"SCRM_MODE": "test", "SOP_WORKING_HOURS": "08:30-20:00", "SOP_QUIET_HOURS": "21:00-07:00"},
        environ={},
    )
    assert custom.sop_working_hours == Window(time(8, 30), time(20))
    for key, value, message in [
        ("SOP_WORKING_HOURS", "9-21", "SOP_WORKING_HOURS: bad time '9'"),
        ("SOP_WORKING_HOURS", "21:00-09:00", "SOP_WORKING_HOURS: '21:00-09:00': must end after it starts"),
        (
            "SOP_QUIET_HOURS",
            "08:00-22:00",
            "SOP_WORKING_HOURS / SOP_QUIET_HOURS: working hours 09:00-21:00 lie",
        ),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            load_settings({"SCRM_MODE": "test", key: value}, environ={})


# -- step_due ---------------------------------------------------------------------------------------


def test_day_0_is_now_when_now_is_in_working_hours() -> None:
    assert due(cn(2026, 11, 24, 14, 5), "day 0") == cn(2026, 11, 24, 14, 5)
    assert due(cn(2026, 11, 24, 9, 0), "day 0") == cn(2026, 11, 24, 9, 0)  # start is inside


def test_day_0_outside_working_hours_moves_to_the_next_start() -> None:
    assert due(cn(2026, 11, 24, 7, 0), "day 0") == cn(2026, 11, 24, 9, 0)
    assert due(cn(2026, 11, 24, 21, 0), "day 0") == cn(2026, 11, 25, 9, 0)  # end is outside
    assert due(cn(2026, 11, 24, 21, 30), "day 0") == cn(2026, 11, 25, 9, 0)
    assert due(cn(2026, 11, 24, 23, 59), "day 0") == cn(2026, 11, 25, 9, 0)
    assert due(cn(2026, 11, 25, 0, 30), "day 0") == cn(2026, 11, 25, 9, 0)


def test_next_day_at_a_time_counts_days_in_china_time() -> None:
    assert due(cn(2026, 11, 24, 14, 0), "+1d 10:00") == cn(2026, 11, 25, 10, 0)
    assert due(cn(2026, 11, 24, 23, 30), "+1d 10:00") == cn(2026, 11, 25, 10, 0)
    # 00:30 in Shanghai is still the previous day in UTC: the day counts from the China date.
    enrolled = cn(2026, 11, 25, 0, 30)
    assert enrolled.date() == datetime(2026, 11, 24).date()
    assert due(enrolled, "+1d 10:00") == cn(2026, 11, 26, 10, 0)
    assert due(cn(2026, 12, 31, 18, 0), "+1d 10:00") == cn(2027, 1, 1, 10, 0)
    assert due(cn(2026, 11, 24, 9, 0), "+30d 19:30") == cn(2026, 12, 24, 19, 30)


def test_days_are_whole_24_hours_then_moved_into_working_hours() -> None:
    assert due(cn(2026, 11, 24, 20, 30), "+3d") == cn(2026, 11, 27, 20, 30)
    assert due(cn(2026, 11, 24, 21, 30), "+3d") == cn(2026, 11, 28, 9, 0)
    assert due(cn(2026, 11, 24, 6, 0), "+3d") == cn(2026, 11, 27, 9, 0)


def test_hours() -> None:
    assert due(cn(2026, 11, 24, 10, 0), "+2h") == cn(2026, 11, 24, 12, 0)
    assert due(cn(2026, 11, 24, 20, 30), "+2h") == cn(2026, 11, 25, 9, 0)
    assert due(cn(2026, 11, 24, 23, 0), "+23h") == cn(2026, 11, 26, 9, 0)  # 22:00 is quiet


def test_quiet_hours_that_cut_into_working_hours() -> None:
    work, quiet = parse_window("07:00-23:00"), parse_window("22:00-08:00")
    assert due(cn(2026, 11, 24, 7, 30), "day 0", work, quiet) == cn(2026, 11, 24, 8, 0)
    assert due(cn(2026, 11, 24, 22, 30), "day 0", work, quiet) == cn(2026, 11, 25, 8, 0)
    assert due(cn(2026, 11, 24, 12, 0), "+1d 07:15", work, quiet) == cn(2026, 11, 25, 8, 0)
    assert due(cn(2026, 11, 24, 21, 59), "day 0", work, quiet) == cn(2026, 11, 24, 21, 59)
    lunch = parse_window("12:00-13:30")  # a quiet lunch break inside the day
    assert due(cn(2026, 11, 24, 12, 10), "day 0", WORK, lunch) == cn(2026, 11, 24, 13, 30)
    assert due(cn(2026, 11, 24, 11, 0), "day 0", WORK, lunch) == cn(2026, 11, 24, 11, 0)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        step_due(datetime(2026, 11, 24, 10), StepOffset(), WORK, QUIET)


clocks = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
offsets = st.one_of(
    st.just(StepOffset()),
    st.builds(StepOffset, days=st.integers(1, 60)),
    st.builds(StepOffset, days=st.integers(1, 60), clock=clocks),
    st.builds(StepOffset, hours=st.integers(1, 23)),
)


quarters = st.integers(0, 95).map(lambda q: time(q // 4, q % 4 * 15))


@st.composite
def hours(draw) -> tuple[Window, Window]:
    start, end = sorted(draw(st.lists(quarters, min_size=2, max_size=2, unique=True)))
    quiet_start, quiet_end = draw(st.lists(quarters, min_size=2, max_size=2, unique=True))
    work, quiet = Window(start, end), Window(quiet_start, quiet_end)
    assume(allowed_intervals(datetime(2026, 1, 1).date(), work, quiet))
    return work, quiet


@given(
    enrolled=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    offset=offsets,
    windows=hours(),
)
def test_a_due_time_is_the_first_allowed_moment_at_or_after_the_target(enrolled, offset, windows) -> None:
    work, quiet = windows
    result = step_due(enrolled, offset, work, quiet)
    if offset.clock is not None:
        day = enrolled.astimezone(CHINA).date() + timedelta(days=offset.days)
        target = datetime.combine(day, offset.clock, tzinfo=CHINA).astimezone(UTC)
    else:
        target = enrolled + timedelta(days=offset.days, hours=offset.hours)
    local = result.astimezone(CHINA).time()
    assert result >= target
    assert work.contains(local) and not quiet.contains(local), "never outside working hours or in quiet hours"
    if result > target:  # moved: the minute before was not allowed
        before = (result - timedelta(minutes=1)).astimezone(CHINA).time()
        assert not (work.contains(before) and not quiet.contains(before))

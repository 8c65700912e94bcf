"""When an SOP step is due: step offsets, working hours, quiet hours. Pure functions, no I/O.

A step's ``at`` is one of

    day 0        at once (enrolment time)                  (also written +0d)
    +3d          3 × 24 h after enrolment
    +1d 10:00    10:00 China time on the 1st day after the day of enrolment
    +2h          2 h after enrolment (1-23 h; for a day or more write +Nd)

All local times are Asia/Shanghai. A due time outside working hours (``SOP_WORKING_HOURS``,
default 09:00-21:00, start inclusive, end exclusive) or inside quiet hours (``SOP_QUIET_HOURS``,
default 22:00-08:00, may wrap midnight) moves forward to the next moment that is in working hours
and not in quiet hours. Nothing is ever due in quiet hours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")
MAX_DAYS = 365
MAX_HOURS = 23

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_AT_DAY0 = re.compile(r"^day\s+0$", re.IGNORECASE)
_AT_DAYS = re.compile(r"^\+(\d+)\s*d(?:\s+(\S+))?$", re.IGNORECASE)
_AT_HOURS = re.compile(r"^\+(\d+)\s*h$", re.IGNORECASE)
# For the JSON Schema: the shapes `at` may take (the loader's messages are more precise).
AT_PATTERN = r"^(day 0|\+\d{1,3}d( ([01]?\d|2[0-3]):[0-5]\d)?|\+\d{1,2}h)$"


def parse_clock(text: str) -> time:
    """``"10:00"`` → time(10, 0); ValueError with a message for anything else ("25:00", "9点")."""
    match = _CLOCK.match(text.strip())
    if not match:
        raise ValueError(f"bad time {text!r}: write HH:MM, e.g. 10:00")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise ValueError(f"bad time {text!r}: hours are 00-23 and minutes 00-59")
    return time(hour, minute)


@dataclass(frozen=True)
class StepOffset:
    """A parsed ``at``. Exactly one shape: at once (all zero), ``days`` (+ ``clock``), or ``hours``."""

    days: int = 0
    clock: time | None = None
    hours: int = 0

    @property
    def sort_minutes(self) -> int:
        """Nominal minutes after enrolment, for checking that a card's steps are in order."""
        clock = self.clock.hour * 60 + self.clock.minute if self.clock else 0
        return self.days * 1440 + clock + self.hours * 60

    def __str__(self) -> str:
        if self.hours:
            return f"+{self.hours}h"
        if self.clock is not None:
            return f"+{self.days}d {self.clock:%H:%M}"
        return f"+{self.days}d" if self.days else "day 0"


def parse_offset(text: str) -> StepOffset:
    """Read a step's ``at``; ValueError naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError("must be text such as `day 0`, `+1d 10:00`, `+3d` or `+2h`")
    text = " ".join(text.split())
    if _AT_DAY0.match(text):
        return StepOffset()
    if match := _AT_DAYS.match(text):
        days = int(match.group(1))
        if days > MAX_DAYS:
            raise ValueError(f"{text!r}: at most +{MAX_DAYS}d")
        clock = parse_clock(match.group(2)) if match.group(2) else None
        if clock is not None and days == 0:
            raise ValueError(f"{text!r}: a time of day needs +1d or later (day 0 means at once)")
        return StepOffset(days=days, clock=clock)
    if match := _AT_HOURS.match(text):
        hours = int(match.group(1))
        if not 1 <= hours <= MAX_HOURS:
            raise ValueError(f"{text!r}: hours are 1-{MAX_HOURS} (for a day or more write +Nd)")
        return StepOffset(hours=hours)
    raise ValueError(f"bad step time {text!r}: write `day 0`, `+1d 10:00`, `+3d` or `+2h`")


@dataclass(frozen=True)
class Window:
    """A daily window of local time, ``[start, end)``; wraps midnight when end ≤ start."""

    start: time
    end: time

    @property
    def wraps(self) -> bool:
        return self.end <= self.start

    def contains(self, moment: time) -> bool:
        if self.wraps:
            return moment >= self.start or moment < self.end
        return self.start <= moment < self.end

    def intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """The window's naive local intervals that touch ``day`` (a wrapping one reaches in from
        the evening before and out into the next morning)."""

        def at(d: date, t: time) -> datetime:
            return datetime.combine(d, t)

        if not self.wraps:
            return [(at(day, self.start), at(day, self.end))]
        before = day - timedelta(days=1)
        after = day + timedelta(days=1)
        return [(at(before, self.start), at(day, self.end)), (at(day, self.start), at(after, self.end))]

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_window(text: str, *, may_wrap: bool = True) -> Window:
    """``"09:00-21:00"`` → Window; ValueError with a message."""
    start, sep, end = (text or "").partition("-")
    if not sep:
        raise ValueError(f"{text!r}: write HH:MM-HH:MM, e.g. 09:00-21:00")
    window = Window(parse_clock(start), parse_clock(end))
    if window.start == window.end:
        raise ValueError(f"{text!r}: start and end are the same time")
    if window.wraps and not may_wrap:
        raise ValueError(f"{text!r}: must end after it starts on the same day")
    return window


def allowed_intervals(day: date, working: Window, quiet: Window) -> list[tuple[datetime, datetime]]:
    """Naive local intervals of ``day`` that are in working hours and outside quiet hours."""
    free: list[tuple[datetime, datetime]] = []
    for start, end in working.intervals(day):
        pieces = [(start, end)]
        for q_start, q_end in quiet.intervals(day):
            cut: list[tuple[datetime, datetime]] = []
            for p_start, p_end in pieces:
                if q_end <= p_start or q_start >= p_end:
                    cut.append((p_start, p_end))
                    continue
                if p_start < q_start:
                    cut.append((p_start, q_start))
                if q_end < p_end:
                    cut.append((q_end, p_end))
            pieces = cut
        free.extend(pieces)
    return sorted(free)


def check_hours(working: Window, quiet: Window) -> None:
    """ValueError when no moment of a day is in working hours and outside quiet hours."""
    if not allowed_intervals(date(2026, 1, 1), working, quiet):
        raise ValueError(f"working hours {working} lie entirely inside quiet hours {quiet}")


def next_allowed(moment_utc: datetime, working: Window, quiet: Window) -> datetime:
    """The first moment ≥ ``moment_utc`` in working hours and outside quiet hours (UTC)."""
    local = moment_utc.astimezone(CHINA).replace(tzinfo=None)
    for offset in range(-1, 9):
        for start, end in allowed_intervals(local.date() + timedelta(days=offset), working, quiet):
            if end > local:
                chosen = max(start, local)
                return chosen.replace(tzinfo=CHINA).astimezone(UTC)
    raise ValueError(f"working hours {working} lie entirely inside quiet hours {quiet}")


def step_due(
    enrolled_at_utc: datetime, step_offset: StepOffset, working_hours: Window, quiet_hours: Window
) -> datetime:
    """When a step is due (UTC), for a customer enrolled at ``enrolled_at_utc`` (timezone-aware).

    ``day 0`` → at once; ``+Nd`` → N × 24 h later; ``+Nh`` → N h later; ``+Nd HH:MM`` → HH:MM China
    time on the Nth day after the enrolment's local date. Then moved forward into working hours and
    out of quiet hours."""
    if enrolled_at_utc.tzinfo is None:
        raise ValueError("enrolled_at_utc must be timezone-aware")
    if step_offset.clock is not None:
        day = enrolled_at_utc.astimezone(CHINA).date() + timedelta(days=step_offset.days)
        target = datetime.combine(day, step_offset.clock, tzinfo=CHINA).astimezone(UTC)
    else:
        target = enrolled_at_utc.astimezone(UTC) + timedelta(days=step_offset.days, hours=step_offset.hours)
    return next_allowed(target, working_hours, quiet_hours)

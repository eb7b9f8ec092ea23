"""The US equity regular session: trading days, half days, and DST-aware session bounds.

Rules follow NYSE's published holiday and early-close calendar (observed-date shifts,
Good Friday, Juneteenth from 2022), plus the unscheduled closures listed in
``SPECIAL_CLOSURES``. Raw data also carries extended-hours rows; only the
minutes returned by ``session_minutes`` are ever used.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

import numpy as np

NEW_YORK = ZoneInfo("America/New_York")
OPEN = dt.time(9, 30)
CLOSE = dt.time(16, 0)
EARLY_CLOSE = dt.time(13, 0)

# Unscheduled full-day closures that no rule produces (attacks, weather, days of mourning).
SPECIAL_CLOSURES = frozenset({
    dt.date(2001, 9, 11), dt.date(2001, 9, 12), dt.date(2001, 9, 13), dt.date(2001, 9, 14),
    dt.date(2004, 6, 11),  # President Reagan
    dt.date(2007, 1, 2),  # President Ford
    dt.date(2012, 10, 29), dt.date(2012, 10, 30),  # Hurricane Sandy
    dt.date(2018, 12, 5),  # President G. H. W. Bush
    dt.date(2025, 1, 9),  # President Carter
})


def _easter(year: int) -> dt.date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The n-th given weekday of a month (n=-1: the last)."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: dt.date) -> dt.date | None:
    """Saturday holidays move to Friday, Sunday ones to Monday (none for a Sat Jan 1)."""
    if day.weekday() == 5:
        return None if (day.month, day.day) == (1, 1) else day - dt.timedelta(days=1)
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    return day


@cache
def holidays(year: int) -> frozenset[dt.date]:
    """Full-day market closures of ``year``."""
    days = [
        _observed(dt.date(year, 1, 1)),
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
        _easter(year) - dt.timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(dt.date(year, 6, 19)) if year >= 2022 else None,
        _observed(dt.date(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(dt.date(year, 12, 25)),
    ]
    # A Saturday Jan 1 of next year is not observed on this year's Dec 31 (NYSE rule).
    days += [d for d in SPECIAL_CLOSURES if d.year == year]
    return frozenset(d for d in days if d is not None)


def is_trading_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in holidays(day.year)


@cache
def half_days(year: int) -> frozenset[dt.date]:
    """Early closes at 13:00: July 3, the day after Thanksgiving, December 24 (when trading days)."""
    candidates = [
        dt.date(year, 7, 3),
        _nth_weekday(year, 11, 3, 4) + dt.timedelta(days=1),
        dt.date(year, 12, 24),
    ]
    return frozenset(d for d in candidates if is_trading_day(d))


def is_half_day(day: dt.date) -> bool:
    return day in half_days(day.year)


def trading_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Trading days in ``[start, end]``, in order."""
    out, day = [], start
    while day <= end:
        if is_trading_day(day):
            out.append(day)
        day += dt.timedelta(days=1)
    return out


def session_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """UTC start of the first regular minute and UTC end of the session (exclusive)."""
    if not is_trading_day(day):
        raise ValueError(f"{day} is not a trading day")
    close = EARLY_CLOSE if is_half_day(day) else CLOSE
    start = dt.datetime.combine(day, OPEN, NEW_YORK).astimezone(dt.timezone.utc)
    end = dt.datetime.combine(day, close, NEW_YORK).astimezone(dt.timezone.utc)
    return start, end


def session_minutes(day: dt.date) -> np.ndarray:
    """The regular-session minute starts of ``day`` as ``datetime64[us]`` (UTC, naive).

    390 minutes on a normal day, 210 on a half day.
    """
    start, end = session_bounds(day)
    n = int((end - start).total_seconds() // 60)
    base = np.datetime64(start.replace(tzinfo=None), "us")
    return base + np.arange(n, dtype=np.int64) * np.timedelta64(60_000_000, "us")

"""The session calendar: NYSE's published 2023-2025 holidays and early closes, the library's XNYS
against the hand-written rules tthf used before (2000-2026), and another exchange (XLON)."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from tthf.engine.data import calendar as cal
from tthf.errors import UsageError

D = dt.date
UTC = dt.timezone.utc

NYSE_HOLIDAYS = {
    2023: [
        D(2023, 1, 2),
        D(2023, 1, 16),
        D(2023, 2, 20),
        D(2023, 4, 7),
        D(2023, 5, 29),
        D(2023, 6, 19),
        D(2023, 7, 4),
        D(2023, 9, 4),
        D(2023, 11, 23),
        D(2023, 12, 25),
    ],
    2024: [
        D(2024, 1, 1),
        D(2024, 1, 15),
        D(2024, 2, 19),
        D(2024, 3, 29),
        D(2024, 5, 27),
        D(2024, 6, 19),
        D(2024, 7, 4),
        D(2024, 9, 2),
        D(2024, 11, 28),
        D(2024, 12, 25),
    ],
    # 2025-01-09: national day of mourning for President Carter
    2025: [
        D(2025, 1, 1),
        D(2025, 1, 9),
        D(2025, 1, 20),
        D(2025, 2, 17),
        D(2025, 4, 18),
        D(2025, 5, 26),
        D(2025, 6, 19),
        D(2025, 7, 4),
        D(2025, 9, 1),
        D(2025, 11, 27),
        D(2025, 12, 25),
    ],
}
NYSE_HALF_DAYS = {
    2023: [D(2023, 7, 3), D(2023, 11, 24)],
    2024: [D(2024, 7, 3), D(2024, 11, 29), D(2024, 12, 24)],
    2025: [D(2025, 7, 3), D(2025, 11, 28), D(2025, 12, 24)],
}


@pytest.mark.parametrize("year", sorted(NYSE_HOLIDAYS))
def test_holidays_match_nyse(year: int) -> None:
    assert sorted(cal.holidays(year)) == NYSE_HOLIDAYS[year]
    for day in NYSE_HOLIDAYS[year]:
        assert not cal.is_trading_day(day)


@pytest.mark.parametrize("year", sorted(NYSE_HALF_DAYS))
def test_half_days_match_nyse(year: int) -> None:
    assert sorted(cal.half_days(year)) == NYSE_HALF_DAYS[year]
    for day in NYSE_HALF_DAYS[year]:
        assert cal.is_trading_day(day) and cal.is_half_day(day)


@pytest.mark.parametrize(
    ("day", "observed"),
    [
        (D(2021, 12, 24), True),  # Christmas on a Saturday: closed the Friday before
        (D(2021, 12, 31), False),  # New Year's Day 2022 on a Saturday: not observed in 2021
        (D(2022, 6, 20), True),  # Juneteenth on a Sunday: closed the Monday after
        (D(2026, 7, 3), True),  # July 4th on a Saturday: closed the Friday before
    ],
)
def test_observed_date_shifts(day: dt.date, observed: bool) -> None:
    assert cal.is_trading_day(day) is not observed


def test_no_half_day_when_july_3_is_the_observed_holiday() -> None:
    assert cal.half_days(2026) == {D(2026, 11, 27), D(2026, 12, 24)}


def test_trading_day_counts() -> None:
    assert len(cal.trading_days(D(2023, 1, 1), D(2023, 12, 31))) == 250
    assert len(cal.trading_days(D(2024, 1, 1), D(2024, 12, 31))) == 252
    assert len(cal.trading_days(D(2025, 1, 1), D(2025, 12, 31))) == 250


def test_trading_days_are_weekdays_in_order_and_inclusive() -> None:
    days = cal.trading_days(D(2024, 3, 1), D(2024, 3, 11))
    assert days[0] == D(2024, 3, 1) and days[-1] == D(2024, 3, 11)
    assert days == sorted(days) and all(d.weekday() < 5 for d in days)
    assert cal.trading_days(D(2024, 3, 9), D(2024, 3, 10)) == []  # a weekend


@pytest.mark.parametrize(
    ("day", "open_utc", "close_utc"),
    [
        (D(2024, 3, 8), dt.datetime(2024, 3, 8, 14, 30, tzinfo=UTC), dt.datetime(2024, 3, 8, 21, 0, tzinfo=UTC)),
        # DST starts Sunday 2024-03-10: the session moves one hour earlier in UTC
        (D(2024, 3, 11), dt.datetime(2024, 3, 11, 13, 30, tzinfo=UTC), dt.datetime(2024, 3, 11, 20, 0, tzinfo=UTC)),
        (D(2024, 11, 1), dt.datetime(2024, 11, 1, 13, 30, tzinfo=UTC), dt.datetime(2024, 11, 1, 20, 0, tzinfo=UTC)),
        # DST ends Sunday 2024-11-03: back to 14:30 UTC
        (D(2024, 11, 4), dt.datetime(2024, 11, 4, 14, 30, tzinfo=UTC), dt.datetime(2024, 11, 4, 21, 0, tzinfo=UTC)),
        # half day in summer time: 09:30-13:00 New York
        (D(2024, 7, 3), dt.datetime(2024, 7, 3, 13, 30, tzinfo=UTC), dt.datetime(2024, 7, 3, 17, 0, tzinfo=UTC)),
        # half day in winter time
        (D(2024, 11, 29), dt.datetime(2024, 11, 29, 14, 30, tzinfo=UTC), dt.datetime(2024, 11, 29, 18, 0, tzinfo=UTC)),
    ],
)
def test_session_bounds_follow_dst(day: dt.date, open_utc: dt.datetime, close_utc: dt.datetime) -> None:
    assert cal.session_bounds(day) == (open_utc, close_utc)


def test_session_minutes_full_and_half_day() -> None:
    full = cal.session_minutes(D(2024, 3, 11))
    assert full.dtype == np.dtype("datetime64[us]") and len(full) == 390
    assert full[0] == np.datetime64("2024-03-11T13:30:00", "us")
    assert full[-1] == np.datetime64("2024-03-11T19:59:00", "us")
    assert (np.diff(full) == np.timedelta64(60, "s")).all()
    half = cal.session_minutes(D(2024, 7, 3))
    assert len(half) == 210
    assert half[-1] == np.datetime64("2024-07-03T16:59:00", "us")


@pytest.mark.parametrize("day", [D(2024, 3, 9), D(2024, 12, 25), D(2025, 1, 9)])
def test_session_bounds_reject_non_trading_days(day: dt.date) -> None:
    with pytest.raises(ValueError, match="not a trading day"):
        cal.session_bounds(day)


# --- the rules tthf wrote by hand before it used exchange_calendars, kept only as the oracle ---

_FORMER_SPECIAL_CLOSURES = {
    D(2001, 9, 11),
    D(2001, 9, 12),
    D(2001, 9, 13),
    D(2001, 9, 14),  # attacks of September 11
    D(2004, 6, 11),
    D(2007, 1, 2),
    D(2018, 12, 5),
    D(2025, 1, 9),  # days of mourning (Reagan, Ford, Bush, Carter)
    D(2012, 10, 29),
    D(2012, 10, 30),  # Hurricane Sandy
}


def _easter(year: int) -> dt.date:
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    h = (19 * a + b - d - (8 * b + 13) // 25 + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return D(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    if n > 0:
        first = D(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = D(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: dt.date) -> dt.date | None:
    if day.weekday() == 5:
        return None if (day.month, day.day) == (1, 1) else day - dt.timedelta(days=1)
    return day + dt.timedelta(days=1) if day.weekday() == 6 else day


def _former_holidays(year: int) -> set[dt.date]:
    days = {
        _observed(D(year, 1, 1)),
        _nth_weekday(year, 1, 0, 3),
        _nth_weekday(year, 2, 0, 3),
        _easter(year) - dt.timedelta(days=2),
        _nth_weekday(year, 5, 0, -1),
        _observed(D(year, 6, 19)) if year >= 2022 else None,
        _observed(D(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),
        _nth_weekday(year, 11, 3, 4),
        _observed(D(year, 12, 25)),
    }
    return {d for d in days if d is not None} | {d for d in _FORMER_SPECIAL_CLOSURES if d.year == year}


def _former_session(day: dt.date) -> tuple[dt.datetime, dt.datetime] | None:
    """(open, close) in UTC under the former rules, None when closed."""
    if day.weekday() >= 5 or day in _former_holidays(day.year):
        return None
    thanksgiving = _nth_weekday(day.year, 11, 3, 4)
    half = day in (D(day.year, 7, 3), thanksgiving + dt.timedelta(days=1), D(day.year, 12, 24))
    ny = ZoneInfo("America/New_York")
    close = dt.time(13, 0) if half else dt.time(16, 0)
    return (
        dt.datetime.combine(day, dt.time(9, 30), ny).astimezone(UTC),
        dt.datetime.combine(day, close, ny).astimezone(UTC),
    )


# Where the library (the exchange's actual history) and the former rules disagree, all early closes:
# in 2002 NYSE closed early on Friday July 5 (the day after Independence Day), not on July 3, and in
# 2003 it also closed early on Friday December 26. Trading days and full closures agree exactly.
LIBRARY_ONLY_HALF_DAYS = {D(2002, 7, 5), D(2003, 12, 26)}
FORMER_ONLY_HALF_DAYS = {D(2002, 7, 3)}


def test_xnys_equals_the_former_rules_2000_2026_apart_from_listed_early_closes() -> None:
    start, end = D(2000, 1, 1), D(2026, 12, 31)
    day, former, differ = start, {}, set()
    while day <= end:
        if (session := _former_session(day)) is not None:
            former[day] = session
        day += dt.timedelta(days=1)
    library = cal.trading_days(start, end)
    assert library == sorted(former)  # the same trading days, so the same holidays and unscheduled closures
    assert len(library) == 6790
    for day in library:
        if cal.session_bounds(day) != former[day]:
            differ.add(day)
    assert differ == LIBRARY_ONLY_HALF_DAYS | FORMER_ONLY_HALF_DAYS
    library_half = {d for y in range(2000, 2027) for d in cal.half_days(y)}
    former_half = {d for d, (o, c) in former.items() if c - o < dt.timedelta(hours=6)}
    assert library_half - former_half == LIBRARY_ONLY_HALF_DAYS
    assert former_half - library_half == FORMER_ONLY_HALF_DAYS
    for day in LIBRARY_ONLY_HALF_DAYS:
        assert cal.session_bounds(day)[1].astimezone(ZoneInfo("America/New_York")).time() == dt.time(13, 0)


def test_unscheduled_closures_come_from_the_library() -> None:
    for day in _FORMER_SPECIAL_CLOSURES:
        assert not cal.is_trading_day(day) and day in cal.holidays(day.year)


def test_another_exchange_has_its_own_sessions_zone_and_early_closes() -> None:
    # London: 08:00-16:30 local, 12:30 closes on Christmas Eve and New Year's Eve, BST from 2024-03-31
    assert cal.session_bounds(D(2024, 3, 28), "XLON") == (
        dt.datetime(2024, 3, 28, 8, 0, tzinfo=UTC),
        dt.datetime(2024, 3, 28, 16, 30, tzinfo=UTC),
    )
    assert cal.session_bounds(D(2024, 4, 2), "XLON") == (
        dt.datetime(2024, 4, 2, 7, 0, tzinfo=UTC),
        dt.datetime(2024, 4, 2, 15, 30, tzinfo=UTC),
    )
    assert len(cal.session_minutes(D(2024, 4, 2), "XLON")) == 510
    assert cal.half_days(2024, "XLON") == {D(2024, 12, 24), D(2024, 12, 31)}
    assert len(cal.session_minutes(D(2024, 12, 24), "XLON")) == 270
    assert not cal.is_trading_day(D(2024, 3, 29), "XLON") and not cal.is_trading_day(D(2024, 4, 1), "XLON")
    assert cal.is_trading_day(D(2024, 7, 4), "XLON") and not cal.is_trading_day(D(2024, 7, 4))
    assert cal.timezone("XLON") == ZoneInfo("Europe/London") and cal.timezone() == cal.NEW_YORK


def test_unknown_calendar_and_dates_outside_the_range_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown exchange calendar 'NOPE'.*XNYS or XLON"):
        cal.is_trading_day(D(2024, 1, 2), "NOPE")
    with pytest.raises(UsageError, match=r"1980-01-02 is outside .* XNYS calendar covers \(1990-01-01\.\.2050-12-31\)"):
        cal.session_bounds(D(1980, 1, 2))
    assert cal.trading_days(D(2024, 1, 5), D(2024, 1, 2)) == []


def test_calls_after_the_first_are_dictionary_lookups() -> None:
    cal.session_bounds(D(2024, 3, 8))  # builds XNYS once per process
    t0 = time.perf_counter()
    for _ in range(10_000):
        cal.session_bounds(D(2024, 3, 8))
        cal.is_trading_day(D(2024, 3, 9))
        cal.is_half_day(D(2024, 7, 3))
    # about 3 us per loop here; through pandas each call would take well over 100 us
    assert time.perf_counter() - t0 < 1.0

"""The session calendar against NYSE's published 2023-2025 holidays and early closes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tthf.engine.data import calendar as cal

D = dt.date
UTC = dt.timezone.utc

NYSE_HOLIDAYS = {
    2023: [D(2023, 1, 2), D(2023, 1, 16), D(2023, 2, 20), D(2023, 4, 7), D(2023, 5, 29), D(2023, 6, 19),
           D(2023, 7, 4), D(2023, 9, 4), D(2023, 11, 23), D(2023, 12, 25)],
    2024: [D(2024, 1, 1), D(2024, 1, 15), D(2024, 2, 19), D(2024, 3, 29), D(2024, 5, 27), D(2024, 6, 19),
           D(2024, 7, 4), D(2024, 9, 2), D(2024, 11, 28), D(2024, 12, 25)],
    # 2025-01-09: national day of mourning for President Carter
    2025: [D(2025, 1, 1), D(2025, 1, 9), D(2025, 1, 20), D(2025, 2, 17), D(2025, 4, 18), D(2025, 5, 26),
           D(2025, 6, 19), D(2025, 7, 4), D(2025, 9, 1), D(2025, 11, 27), D(2025, 12, 25)],
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

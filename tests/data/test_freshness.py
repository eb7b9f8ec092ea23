"""Freshness at times around weekends, holidays, half days and closes (XNYS, New York time)."""

from __future__ import annotations

import datetime as dt

import pytest

from tthf.engine.data.calendar import NEW_YORK, last_completed_session, trading_days
from tthf.engine.data.freshness import Freshness, check_freshness, local_time, parse_as_of
from tthf.errors import UsageError

D = dt.date


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=NEW_YORK)


def fresh(newest: dt.date, when: str, max_missing: int = 0) -> Freshness:
    return check_freshness(
        trading_days(newest - dt.timedelta(days=10), newest), source="m", as_of=at(when), max_missing=max_missing
    )


@pytest.mark.parametrize(
    ("when", "last"),
    [
        ("2024-03-05T15:59:59", D(2024, 3, 4)),  # a second before the close: the day is not complete
        ("2024-03-05T16:00", D(2024, 3, 5)),  # at the close it is
        ("2024-03-09T12:00", D(2024, 3, 8)),  # Saturday: Friday
        ("2024-03-11T09:31", D(2024, 3, 8)),  # Monday's open: still Friday
        ("2024-07-03T12:59", D(2024, 7, 2)),  # half day, before its 13:00 close
        ("2024-07-03T13:00", D(2024, 7, 3)),
        ("2024-07-04T18:00", D(2024, 7, 3)),  # Independence Day
        ("2024-07-05T02:00", D(2024, 7, 3)),
    ],
)
def test_last_completed_session(when: str, last: dt.date) -> None:
    assert last_completed_session(at(when)) == last


def test_minutes_around_a_close() -> None:
    assert not fresh(D(2024, 3, 4), "2024-03-05T15:59").stale
    late = fresh(D(2024, 3, 4), "2024-03-05T16:00")
    assert late.stale and late.missing == [D(2024, 3, 5)]
    assert late.message().startswith("stale: m: newest date with data 2024-03-04; 1 completed session at ")
    assert late.message().endswith("without data: 2024-03-05")
    assert not fresh(D(2024, 3, 5), "2024-03-05T16:01").stale


def test_a_weekend_is_not_missing() -> None:
    ok = fresh(D(2024, 3, 8), "2024-03-10T20:00")
    assert not ok.stale and ok.missing == [] and ok.message().startswith("fresh: m: newest date with data 2024-03-08")
    assert fresh(D(2024, 3, 7), "2024-03-10T20:00").missing == [D(2024, 3, 8)]


def test_a_holiday_and_a_half_day() -> None:
    assert fresh(D(2024, 7, 3), "2024-07-05T10:00").missing == []  # the 4th is a holiday
    assert fresh(D(2024, 7, 2), "2024-07-04T10:00").missing == [D(2024, 7, 3)]  # the half day closed at 13:00
    assert fresh(D(2024, 7, 2), "2024-07-03T12:30").missing == []
    assert fresh(D(2024, 7, 1), "2024-07-08T17:00").missing == [D(2024, 7, d) for d in (2, 3, 5, 8)]


def test_max_missing_allows_a_late_feed() -> None:
    one_late = fresh(D(2024, 3, 7), "2024-03-08T17:00", max_missing=1)
    assert not one_late.stale and one_late.message().startswith("within --max-missing 1")
    assert fresh(D(2024, 3, 6), "2024-03-08T17:00", max_missing=1).stale
    with pytest.raises(UsageError, match="max-missing"):
        fresh(D(2024, 3, 6), "2024-03-08T17:00", max_missing=-1)


def test_no_data_at_all_is_stale() -> None:
    empty = check_freshness([], source="m", as_of=at("2024-03-08T17:00"))
    assert empty.stale and empty.newest is None and empty.missing == [D(2024, 3, 8)]


def test_as_of_without_offset_is_exchange_time() -> None:
    assert local_time(parse_as_of("2024-03-05T16:00")) == at("2024-03-05T16:00")
    assert local_time(parse_as_of("2024-03-05T21:00Z")) == at("2024-03-05T16:00")  # EST is UTC-5 in March
    with pytest.raises(UsageError, match="is not a time"):
        parse_as_of("yesterday")

"""Exchange sessions: trading days, half days and DST-aware session bounds, from ``exchange_calendars``.

The rules (holidays, observed-date shifts, early closes, unscheduled closures such as
2001-09-11 or national days of mourning) are the maintained ``exchange_calendars``
library's, not ours: an exchange that changes its calendar is a library upgrade, not a
code change here. Every function takes the calendar's ISO MIC code (default ``XNYS``,
the New York Stock Exchange), so a run recorded on another exchange can pass its own.

Callers ask per day and per real-time update, so each calendar is built once per process
(importing pandas and building XNYS over ``START..END`` costs about 1.5 s, measured in
docs/data.md) and its sessions are turned into plain dicts; after that every call is a
dictionary lookup. Raw data also carries extended-hours rows; only the minutes returned
by ``session_minutes`` are ever used.
"""

from __future__ import annotations

import datetime as dt
import warnings
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import cache
from zoneinfo import ZoneInfo

import numpy as np

from tthf.engine.config import DEFAULT_CALENDAR
from tthf.errors import UsageError

NEW_YORK = ZoneInfo("America/New_York")
#: the dates every calendar covers; a date outside them is a ``UsageError``
START = dt.date(1990, 1, 1)
END = dt.date(2050, 12, 31)

_MINUTE_US = 60_000_000


@dataclass(frozen=True)
class Sessions:
    """One exchange's sessions over ``START..END`` as plain Python values (no pandas per call)."""

    name: str
    tz: ZoneInfo
    weekmask: str  # "1111100": the weekdays (Monday first) the exchange normally trades
    bounds: dict[dt.date, tuple[dt.datetime, dt.datetime]]  # UTC open, UTC close (exclusive)
    early_closes: frozenset[dt.date]
    ordered: tuple[dt.date, ...]


@cache
def sessions(calendar: str = DEFAULT_CALENDAR) -> Sessions:
    """The sessions of ``calendar``, built once per process and name."""
    import exchange_calendars as xcals  # pandas and the library load on first use only

    try:
        with warnings.catch_warnings():  # the library's own use of APIs pandas has deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            return _build(xcals.get_calendar(calendar, start=START.isoformat(), end=END.isoformat()), calendar)
    except xcals.errors.InvalidCalendarName as exc:
        raise UsageError(
            f"unknown exchange calendar {calendar!r}; use an ISO MIC code such as XNYS or XLON "
            "(exchange_calendars.get_calendar_names() lists them)"
        ) from exc


def _build(cal, name: str) -> Sessions:  # cal: exchange_calendars.ExchangeCalendar
    if cal.break_starts.notna().any():
        raise UsageError(f"calendar {name!r} has intraday breaks, which tthf's minute grid does not model yet")
    days = [d.date() for d in cal.sessions]
    opens = [t.to_pydatetime().astimezone(dt.timezone.utc) for t in cal.opens]
    closes = [t.to_pydatetime().astimezone(dt.timezone.utc) for t in cal.closes]
    return Sessions(
        name=name,
        tz=ZoneInfo(str(cal.tz)),
        weekmask=cal.weekmask,
        bounds={d: (o, c) for d, o, c in zip(days, opens, closes)},
        early_closes=frozenset(d.date() for d in cal.early_closes),
        ordered=tuple(days),
    )


def _check_range(day: dt.date, calendar: str) -> None:
    if not START <= day <= END:
        raise UsageError(f"{day} is outside the dates tthf's {calendar} calendar covers ({START}..{END})")


def timezone(calendar: str = DEFAULT_CALENDAR) -> ZoneInfo:
    """The exchange's local time zone (the one its trading dates are counted in)."""
    return sessions(calendar).tz


def is_trading_day(day: dt.date, calendar: str = DEFAULT_CALENDAR) -> bool:
    _check_range(day, calendar)
    return day in sessions(calendar).bounds


def holidays(year: int, calendar: str = DEFAULT_CALENDAR) -> frozenset[dt.date]:
    """Days of ``year`` that are normally trading weekdays but closed (holidays and unscheduled closures)."""
    cal = sessions(calendar)
    day, out = dt.date(year, 1, 1), set()
    while day.year == year:
        if cal.weekmask[day.weekday()] == "1" and day not in cal.bounds:
            out.add(day)
        day += dt.timedelta(days=1)
    return frozenset(out)


def half_days(year: int, calendar: str = DEFAULT_CALENDAR) -> frozenset[dt.date]:
    """Sessions of ``year`` that close early (13:00 New York on XNYS)."""
    return frozenset(d for d in sessions(calendar).early_closes if d.year == year)


def is_half_day(day: dt.date, calendar: str = DEFAULT_CALENDAR) -> bool:
    return day in sessions(calendar).early_closes


def trading_days(start: dt.date, end: dt.date, calendar: str = DEFAULT_CALENDAR) -> list[dt.date]:
    """Trading days in ``[start, end]``, in order."""
    if start > end:
        return []
    _check_range(start, calendar)
    _check_range(end, calendar)
    ordered = sessions(calendar).ordered
    return list(ordered[bisect_left(ordered, start) : bisect_right(ordered, end)])


def session_bounds(day: dt.date, calendar: str = DEFAULT_CALENDAR) -> tuple[dt.datetime, dt.datetime]:
    """UTC start of the first regular minute and UTC end of the session (exclusive)."""
    _check_range(day, calendar)
    try:
        return sessions(calendar).bounds[day]
    except KeyError:
        raise ValueError(f"{day} is not a trading day") from None


def session_minutes(day: dt.date, calendar: str = DEFAULT_CALENDAR) -> np.ndarray:
    """The regular-session minute starts of ``day`` as ``datetime64[us]`` (UTC, naive).

    390 minutes on a normal XNYS day, 210 on a half day.
    """
    start, end = session_bounds(day, calendar)
    n = int((end - start).total_seconds() // 60)
    base = np.datetime64(start.replace(tzinfo=None), "us")
    return base + np.arange(n, dtype=np.int64) * np.timedelta64(_MINUTE_US, "us")


def last_completed_session(as_of: dt.datetime, calendar: str = DEFAULT_CALENDAR) -> dt.date | None:
    """The latest session whose close has passed at ``as_of`` (an aware time), None before ``START``.

    A session is complete at its close (the end of its last minute): at 16:00:00 New York a
    normal XNYS day is complete, at 15:59:59 it is not; a half day is complete from 13:00.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    cal = sessions(calendar)
    i = bisect_right(cal.ordered, as_of.astimezone(dt.timezone.utc).date() + dt.timedelta(days=1))
    for j in range(i - 1, -1, -1):  # sessions close in order: the first closed one going back is the answer
        if cal.bounds[cal.ordered[j]][1] <= as_of:
            return cal.ordered[j]
    return None


def is_completed(day: dt.date, as_of: dt.datetime, calendar: str = DEFAULT_CALENDAR) -> bool:
    """Whether trading day ``day``'s close has passed at ``as_of`` (an aware time)."""
    return session_bounds(day, calendar)[1] <= as_of

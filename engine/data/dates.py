"""``--dates`` specs: a year, a month, a day, an inclusive range ``A:B``, or a comma list.

``2024``, ``2024-03``, ``2024-03-05``, ``2024-01:2024-03`` (Jan 1 .. Mar 31),
``2024-03-05:2024-04``, ``2023-12,2024-02-01:2024-02-15``. The result holds the dates that
have data and, separately, the trading days the spec asked for that have none, which
callers report without failing.

Two specs are for schedules, where nobody writes the date: ``latest``, the newest trading
date that has data, and ``new``, the trading dates with data whose session has closed and
that a run has not done yet. Only a caller that knows a run can tell what it has done
(tthf-run: predicted with the same settings; tthf-eval: scored in the rolling history), so
``new`` is resolved there from ``completed_dates``; ``parse_dates`` resolves ``latest``.
"""

from __future__ import annotations

import calendar as _cal
import datetime as dt
import logging
import re
from bisect import bisect_left
from dataclasses import dataclass

from tthf.engine.data.calendar import DEFAULT_CALENDAR, END, START, is_completed, is_trading_day, trading_days
from tthf.errors import NoDataError, UsageError

log = logging.getLogger("tthf.dates")

FORMS = (
    "YYYY, YYYY-MM, YYYY-MM-DD, a range A:B of those (inclusive), a comma list of any of these, "
    "latest or new (tthf-run, tthf-eval)"
)
#: the schedule specs (module doc)
LATEST, NEW = "latest", "new"
_TERM = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


@dataclass(frozen=True)
class DateSelection:
    """``dates``: selected dates with data, ascending; ``missing``: requested trading days without data."""

    spec: str
    dates: list[dt.date]
    missing: list[dt.date]


def _term(text: str, spec: str) -> tuple[dt.date, dt.date]:
    """First and last day covered by one year, month or day."""
    match = _TERM.match(text)
    if not match:
        raise UsageError(f"--dates {spec!r}: cannot parse {text!r}; use {FORMS}")
    year, month, day = (int(g) if g else None for g in match.groups())
    try:
        if month is None:
            return dt.date(year, 1, 1), dt.date(year, 12, 31)  # type: ignore[arg-type]
        if day is None:
            last = _cal.monthrange(year, month)[1]  # type: ignore[arg-type]
            return dt.date(year, month, 1), dt.date(year, month, last)  # type: ignore[arg-type]
        return (d := dt.date(year, month, day)), d  # type: ignore[arg-type]
    except (ValueError, _cal.IllegalMonthError) as exc:
        raise UsageError(f"--dates {spec!r}: {text!r} is not a valid date ({exc}); use {FORMS}") from exc


def parse_intervals(spec: str) -> list[tuple[dt.date, dt.date]]:
    """The inclusive ``(first, last)`` intervals a spec names, in the order given."""
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or any(not item for item in items):
        raise UsageError(f"--dates {spec!r}: empty item; use {FORMS}")
    out = []
    for item in items:
        ends = [e.strip() for e in item.split(":")]
        if len(ends) == 1:
            out.append(_term(ends[0], spec))
        elif len(ends) == 2:
            first, last = _term(ends[0], spec)[0], _term(ends[1], spec)[1]
            if first > last:
                raise UsageError(f"--dates {spec!r}: range {item!r} ends before it starts; write the earlier end first")
            out.append((first, last))
        else:
            raise UsageError(f"--dates {spec!r}: {item!r} has more than one ':'; use {FORMS}")
    return out


def parse_dates(
    spec: str, available: list[dt.date], *, source: str = "the data root", calendar: str = DEFAULT_CALENDAR
) -> DateSelection:
    """Select the available dates a spec covers; trading days it covers without data go to ``missing``.

    Raises ``NoDataError`` (naming the nearest dates that do have data) when nothing is selected.
    Future days are never reported missing. ``latest`` is resolved here (and logged); ``new`` needs
    a run's record and is a ``UsageError`` (its callers resolve it with ``completed_dates``).
    """
    if spec.strip() == LATEST:
        return _latest(available, source, calendar)
    if spec.strip() == NEW:
        raise UsageError(
            f"--dates new needs a run to compare with (tthf-run, tthf-eval); here use --dates {LATEST} or a date"
        )
    intervals = parse_intervals(spec)
    have = sorted(set(available))
    chosen: set[dt.date] = set()
    requested: set[dt.date] = set()
    today = dt.date.today()
    for first, last in intervals:
        chosen.update(d for d in have[bisect_left(have, first) :] if d <= last)
        if first <= today:
            requested.update(trading_days(first, min(last, today), calendar))
    if not chosen:
        raise NoDataError(f"--dates {spec!r} selects no date with data in {source}; {_nearest(have, intervals)}")
    return DateSelection(spec, sorted(chosen), sorted(requested - set(have)))


def _nearest(have: list[dt.date], intervals: list[tuple[dt.date, dt.date]]) -> str:
    """The closest dates with data on either side of each requested interval, and the overall coverage."""
    if not have:
        return "it has no data at all: generate some with tthf-synth or point --data / TTHF_DATA elsewhere"
    near: set[dt.date] = set()
    for first, _last in intervals:
        i = bisect_left(have, first)  # nothing lies inside [first, last], so have[i] > last
        near.update(have[j] for j in (i - 1, i) if 0 <= j < len(have))
    listed = ", ".join(str(d) for d in sorted(near))
    return f"nearest dates with data: {listed}; data covers {have[0]}..{have[-1]} ({len(have)} dates)"


def trading_dates(available: list[dt.date], calendar: str = DEFAULT_CALENDAR) -> list[dt.date]:
    """The dates of ``available`` that are sessions of ``calendar``, ascending (a weekend partition is not)."""
    return sorted(d for d in set(available) if START <= d <= END and is_trading_day(d, calendar))


def _latest(available: list[dt.date], source: str, calendar: str) -> DateSelection:
    days = trading_dates(available, calendar)
    if not days:
        raise NoDataError(f"--dates {LATEST}: {source} has no trading date ({calendar}) with data")
    log.info("--dates %s: %s", LATEST, days[-1])
    return DateSelection(LATEST, days[-1:], [])


def completed_dates(available: list[dt.date], as_of: dt.datetime, calendar: str = DEFAULT_CALENDAR) -> list[dt.date]:
    """The candidates of ``--dates new``: trading dates with data whose session has closed at ``as_of``.

    A session still open is left out, so a half-written partition is not predicted and then
    taken for done; the next call after the close picks it up.
    """
    return [d for d in trading_dates(available, calendar) if is_completed(d, as_of, calendar)]

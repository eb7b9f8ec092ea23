"""Is a data root up to date? Its newest trading date against the sessions that have closed.

A scheduled job cannot tell a quiet day from a feed that stopped by looking at the data
alone: the exchange calendar can. At a time ``as_of`` (default now) every session whose
close has passed should have data; the completed sessions after the newest date with data
are *missing*, and more than ``max_missing`` of them make the root *stale*
(``StaleDataError``'s exit code in tthf-check and tthf-daily, a warning in tthf-run
``--dates latest|new``). Gaps before the newest date are not freshness: ``--dates new``
fills them when they arrive.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from tthf.engine.data.calendar import DEFAULT_CALENDAR, last_completed_session, timezone, trading_days
from tthf.engine.data.dates import trading_dates
from tthf.errors import UsageError

#: the message lists at most this many missing sessions
_SHOW = 10


@dataclass(frozen=True)
class Freshness:
    """The newest trading date with data, the last completed session at ``as_of``, the sessions between."""

    source: str
    calendar: str
    as_of: dt.datetime  # aware, in the exchange's zone
    newest: dt.date | None
    last_completed: dt.date | None
    missing: list[dt.date]  # completed sessions after ``newest`` (the last one when there is no data)
    max_missing: int

    @property
    def stale(self) -> bool:
        return len(self.missing) > self.max_missing

    def message(self) -> str:
        """One line: fresh, or ``stale`` with the missing sessions named."""
        at = f"at {self.as_of.isoformat(timespec='minutes')} ({self.calendar})"
        newest = f"newest date with data {self.newest}" if self.newest else "no trading date with data"
        if not self.missing:
            return f"fresh: {self.source}: {newest}; last completed session {self.last_completed} {at}"
        shown = ", ".join(str(d) for d in self.missing[:_SHOW])
        more = f" and {len(self.missing) - _SHOW} more" if len(self.missing) > _SHOW else ""
        n = len(self.missing)
        verdict = "stale" if self.stale else f"within --max-missing {self.max_missing}"
        return (
            f"{verdict}: {self.source}: {newest}; {n} completed session{'s' * (n != 1)} {at} "
            f"without data: {shown}{more}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "calendar": self.calendar,
            "as_of": self.as_of.isoformat(),
            "newest": str(self.newest) if self.newest else None,
            "last_completed": str(self.last_completed) if self.last_completed else None,
            "missing": [str(d) for d in self.missing],
            "max_missing": self.max_missing,
            "stale": self.stale,
        }


def parse_as_of(text: str) -> dt.datetime:
    """``--as-of``: an ISO time; one without an offset is the exchange's local time (``check_freshness``)."""
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise UsageError(
            f"--as-of {text!r} is not a time; write e.g. 2024-03-05T16:05 (the exchange's local time) "
            "or 2024-03-05T21:05Z"
        ) from exc


def local_time(as_of: dt.datetime | None, calendar: str = DEFAULT_CALENDAR) -> dt.datetime:
    """``as_of`` in the exchange's zone: now when None, a naive time taken as the exchange's local time."""
    tz = timezone(calendar)
    if as_of is None:
        return dt.datetime.now(tz)
    return as_of.replace(tzinfo=tz) if as_of.tzinfo is None else as_of.astimezone(tz)


def check_freshness(
    available: list[dt.date],
    *,
    source: str,
    as_of: dt.datetime | None = None,
    calendar: str = DEFAULT_CALENDAR,
    max_missing: int = 0,
) -> Freshness:
    """Compare the newest trading date of ``available`` with the last session completed at ``as_of``
    (``local_time``: default now, naive is the exchange's local time)."""
    if max_missing < 0:
        raise UsageError(f"--max-missing must be >= 0, got {max_missing}")
    when = local_time(as_of, calendar)
    days = trading_dates(available, calendar)
    newest = days[-1] if days else None
    last = last_completed_session(when, calendar)
    missing: list[dt.date] = []
    if last is not None:  # without any data, the last completed session alone is named missing
        missing = trading_days(newest + dt.timedelta(days=1) if newest else last, last, calendar)
    return Freshness(source, calendar, when, newest, last, missing, max_missing)

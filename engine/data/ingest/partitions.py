"""Raw rows -> one validated, atomically written partition per trading date.

Every date is validated against the raw schema before the first one is written, so a
conversion that fails on its data writes nothing. Each partition is one file written
through ``marketdata.write_day`` (atomic: a reader sees the whole file or none), so a
failure while writing (disk full, S3 down) leaves the dates before it complete and the
others untouched, never a half-written partition.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import polars as pl

from tthf.engine.data.calendar import END, NEW_YORK, START, is_trading_day
from tthf.engine.data.marketdata import conform, list_dates, partition, write_day
from tthf.engine.store import Store
from tthf.errors import DataError, UsageError

T = TypeVar("T")
#: ``progress(items, desc, total, unit)``: wraps an iterable to show progress (tthf.cli._common.progress)
Progress = Callable[[Iterable[T], str, int, str], Iterable[T]]
PART = "part-0"


@dataclass(frozen=True)
class DateWritten:
    date: dt.date
    rows: int
    symbols: int
    uri: str


def no_progress(items: Iterable[T], desc: str, total: int, unit: str) -> Iterable[T]:
    return items


def _split(rows: pl.DataFrame, drops: Counter[str]) -> dict[dt.date, pl.DataFrame]:
    """Rows by New York trading date; rows on weekends and holidays are dropped and counted."""
    local_date = pl.col("ts").dt.convert_time_zone(str(NEW_YORK)).dt.date().alias("_date")
    by_date = rows.with_columns(local_date).partition_by("_date", as_dict=True, include_key=False)
    odd = sorted(day for (day,) in by_date if not START <= day <= END)
    if odd:
        raise DataError(
            f"rows dated {odd[0]}..{odd[-1]} are outside the exchange calendar's dates ({START}..{END}): "
            "timestamps in another unit or zone than the vendor's? check --ts-unit, --tz and --ts-format"
        )
    out = {}
    for (day,), frame in sorted(by_date.items()):
        if is_trading_day(day):
            out[day] = frame
        else:
            drops["non_trading_day"] += frame.height
    return out


def _check_free(out: Store, days: list[dt.date], overwrite: bool) -> None:
    taken = sorted(set(list_dates(out)) & set(days))
    if taken and not overwrite:
        raise UsageError(
            f"{out.uri()}: {len(taken)} of the {len(days)} dates to write already have data "
            f"({taken[0]}..{taken[-1]}); pass --overwrite to replace those partitions or choose another --out"
        )


def write_partitions(
    rows: pl.DataFrame, out: Store, drops: Counter[str], *, overwrite: bool = False, progress: Progress = no_progress
) -> tuple[list[DateWritten], int]:
    """Validate every date's rows, then write ``date=YYYY-MM-DD/part-0.parquet`` for each.

    Returns the dates written and the number of distinct symbols in them.
    """
    by_date = _split(rows, drops)
    if not by_date:
        raise DataError("no rows fall on a trading day (New York dates, exchange calendar XNYS); nothing to write")
    days = sorted(by_date)
    _check_free(out, days, overwrite)
    for day in days:  # all dates are valid before the first is written
        conform(by_date[day].to_arrow(), out.uri(f"{partition(day)}/{PART}.parquet"))
    written, symbols = [], set()
    for day in progress(days, "write", len(days), "date"):
        frame = by_date[day]
        uri = write_day(out, day, frame, part=PART)
        for key in out.list(partition(day)):  # an overwritten partition keeps only the new file
            if key.endswith(".parquet") and key != f"{partition(day)}/{PART}.parquet":
                out.delete(key)
        names = frame.get_column("symbol").unique()
        symbols.update(names.to_list())
        written.append(DateWritten(day, frame.height, len(names), uri))
    return written, len(symbols)

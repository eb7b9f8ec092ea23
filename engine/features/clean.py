"""Cleaning: a day's raw rows -> one clean row per (symbol, minute) of the regular session, and counts.

polars does this part (docs/features.md, "Cleaning rules"): the session filter, the
symbol mapping, duplicates, and the rules that null out bad quotes and trades. Every
rule is counted (``COUNT_KEYS``) so a run manifest says what was cleaned. Time is the
minute ``ts`` falls in: a ``ts`` with seconds is floored to its minute's start
(``ts_floored``), so vendors that stamp a bar inside its minute read as those that stamp
its start; a date whose bars look stamped with their minute's end is only warned about
(``end_stamp_warning``), since it cannot be told apart from data reliably.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import numpy as np
import polars as pl

from tthf.engine.data.calendar import DEFAULT_CALENDAR, is_trading_day, session_bounds, timezone
from tthf.engine.data.marketdata import case_renames, rename_hint, split_duplicates
from tthf.errors import DataError, UsageError

QUOTE = ("bid", "ask", "bid_size", "ask_size")
TRADE_PRICES = ("open", "high", "low", "close", "vwap")
_REQUIRED = ("symbol", "ts", *QUOTE, "open", "high", "low", "close", "volume")
_OPTIONAL = ("trade_count", "vwap")
MINUTE_US = 60_000_000
_FIX = "see docs/data.md for the raw schema and fix the writer"

# the counts every DayFeatures carries, in pipeline order (docs/features.md, "Cleaning rules")
COUNT_KEYS = (
    "rows_in",
    "null_key",
    "ts_floored",
    "extended_hours",
    "unlisted_symbol",
    "duplicate_rows",
    "rows_used",
    "quote_null",
    "quote_nonfinite",
    "quote_nonpositive",
    "quote_crossed",
    "trade_invalid",
    "symbols_no_quote",
    "missing_minutes",
    "masked_out",
)
_FLAGS = ("quote_null", "quote_nonfinite", "quote_nonpositive", "quote_crossed", "trade_invalid")


class Session(NamedTuple):
    """A trading day's regular session: its first minute (µs since the epoch) and its length."""

    start_us: int
    n_minutes: int

    @classmethod
    def of(cls, day: dt.date, calendar: str = DEFAULT_CALENDAR) -> Session:
        start, end = session_bounds(day, calendar)
        return cls(int(start.timestamp()) * 1_000_000, int((end - start).total_seconds()) // 60)

    @property
    def end_us(self) -> int:
        return self.start_us + self.n_minutes * MINUTE_US


class CleanRows(NamedTuple):
    """Rows keyed by (sid, tid) -- symbol index, minute index -- with the clean values."""

    rows: pl.DataFrame
    symbols: list[str]
    n_minutes: int
    counts: dict[str, int]
    #: with ``by_minute``: per minute (``tid``) with rows, its rows used and the value rules' counts
    by_minute: pl.DataFrame | None = None


def _check_columns(raw: pl.DataFrame, source: str) -> None:
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        hint = rename_hint(case_renames(raw.columns, (*_REQUIRED, *_OPTIONAL)))
        raise DataError(f"{source}: required column(s) {missing} missing; the frame has {raw.columns}; {hint}{_FIX}")
    for name in (*_REQUIRED, *_OPTIONAL):
        if name not in raw.columns:
            continue
        dtype = raw.schema[name]
        if name == "symbol":
            ok = dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
        elif name == "ts":
            ok = isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
        else:
            ok = dtype.is_numeric() or dtype == pl.Null
        if not ok:
            want = {"symbol": "string", "ts": "timestamp[us, UTC] (time-zone aware)"}.get(name, "a numeric type")
            raise DataError(f"{source}: column {name!r} has type {dtype}, expected {want}; {_FIX}")


def _finite(col: str) -> pl.Expr:
    return pl.col(col).is_finite().fill_null(False)


def _minute_offset(session: Session) -> pl.Expr:
    """``ts`` floored to its minute's start, in µs from the session's first minute."""
    us = pl.col("ts").dt.epoch("us")
    return us // MINUTE_US * MINUTE_US - session.start_us


def _session_rows(raw: pl.DataFrame, session: Session, counts: dict[str, int]) -> pl.DataFrame:
    """Canonical float columns and the minute offset (``ts`` floored); rows without a key or outside the session dropped."""
    frame = raw.select(
        pl.col("symbol").cast(pl.String),
        _minute_offset(session).alias("_off"),
        (pl.col("ts").dt.epoch("us") % MINUTE_US != 0).alias("_floored"),
        *[pl.col(c).cast(pl.Float64) for c in (*QUOTE, "open", "high", "low", "close", "volume")],
        *[(pl.col(c) if c in raw.columns else pl.lit(None)).cast(pl.Float64).alias(c) for c in _OPTIONAL],
    )
    null_key = pl.col("symbol").is_null() | pl.col("_off").is_null()
    outside = ~null_key & ((pl.col("_off") < 0) | (pl.col("_off") >= session.n_minutes * MINUTE_US))
    row_counts = frame.select(
        null_key.sum().alias("null_key"),
        (~null_key & pl.col("_floored")).sum().alias("ts_floored"),
        outside.sum().alias("extended_hours"),
    ).row(0, named=True)
    counts.update({k: int(v) for k, v in row_counts.items()})
    return frame.filter(~(null_key | outside)).drop("_floored")


def _hours(day: dt.date, calendar: str) -> str:
    """``day``'s regular session, local and UTC: '09:30-16:00 America/New_York (14:30-21:00 UTC)'."""
    zone = timezone(calendar)
    opens, closes = session_bounds(day, calendar)
    local = f"{opens.astimezone(zone):%H:%M}-{closes.astimezone(zone):%H:%M} {zone}"
    return f"{local} ({opens:%H:%M}-{closes:%H:%M} UTC)"


def _outside_session(raw: pl.DataFrame, day: dt.date, source: str, counts: dict[str, int], calendar: str) -> str:
    """Why ``day`` has no row in its regular session: no rows, no keys, or every row outside, with their span."""
    if not counts["rows_in"]:
        return f"{source}: no rows for {day}; write the date's bars or delete its empty partition"
    keyed = raw.filter(pl.col("symbol").is_not_null() & pl.col("ts").is_not_null())
    if keyed.is_empty():
        return f"{source}: none of the {counts['rows_in']} rows of {day} has both a symbol and a ts; {_FIX}"
    zone = timezone(calendar)
    first, last = keyed.select(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")).row(0)
    span = ", ".join(
        f"{what} ts {t.astimezone(dt.timezone.utc).isoformat()} ({t.astimezone(zone):%Y-%m-%d %H:%M} local)"
        for what, t in (("first", first), ("last", last))
    )
    nulls = f" (and {counts['null_key']} rows without a symbol or ts)" if counts["null_key"] else ""
    return (
        f"{source}: all {keyed.height} rows are outside the regular session of {day}, {_hours(day, calendar)}{nulls}: "
        f"{span}. Are the timestamps UTC instants? Local times written as UTC (or another zone or unit) shift "
        "every row by hours: write ts in UTC (tthf-ingest csv --tz ZONE converts local times) and re-write the partition"
    )


def end_stamp_warning(raw: pl.DataFrame, day: dt.date, source: str, calendar: str = DEFAULT_CALENDAR) -> str:
    """Why ``raw``'s bars look stamped with their minute's end ('' when they do not).

    The sign: rows at the session's close (16:00, the end of the last bar) and none at its
    open (09:30, the start of the first). Only a warning, and only for a whole day (real
    time sees a day minute by minute): a start-stamped feed whose 16:00 rows are post-market
    bars and that has no bar at 09:30 looks the same, so tthf never shifts data by guessing.
    """
    session = Session.of(day, calendar)
    offset = raw.select(_minute_offset(session).alias("off")).get_column("off")
    at_close = int((offset == session.n_minutes * MINUTE_US).sum())
    if not at_close or (offset == 0).any():
        return ""
    zone = timezone(calendar)
    opens, closes = session_bounds(day, calendar)
    return (
        f"{source}: the bars of {day} look stamped with their minute's end: {at_close} row(s) at the close "
        f"({closes.astimezone(zone):%H:%M} {zone}) and none at the open ({opens.astimezone(zone):%H:%M}). tthf reads "
        "ts as the minute's start, so every value lands one minute late and the last bar is dropped as extended "
        "hours. Re-ingest with tthf-ingest csv --bar-label end, or subtract one minute from ts and re-write the "
        "partition (if those rows are post-market bars, ignore this)"
    )


def _symbols(frame: pl.DataFrame, symbols: list[str] | None, counts: dict[str, int]) -> tuple[pl.DataFrame, list[str]]:
    """The grid's symbols (given, or every symbol with a session row, sorted); rows of others dropped."""
    if symbols is None:
        return frame, sorted(frame.get_column("symbol").unique().to_list())
    symbols = list(symbols)
    if len(set(symbols)) != len(symbols):
        dup = sorted({s for s in symbols if symbols.count(s) > 1})
        raise UsageError(f"symbols lists {dup} more than once; pass each symbol once")
    kept = frame.filter(pl.col("symbol").is_in(symbols))
    counts["unlisted_symbol"] = frame.height - kept.height
    return kept, symbols


def _resolve_duplicates(
    frame: pl.DataFrame, symbols: list[str], session: Session, source: str, counts: dict[str, int]
) -> pl.DataFrame:
    """Exact repeats of a (symbol, minute) row are dropped and counted; rows that disagree are a DataError."""
    cell = frame.get_column("sid").to_numpy().astype(np.int64) * session.n_minutes + frame.get_column("tid").to_numpy()
    if not len(cell) or np.bincount(cell).max() <= 1:
        return frame
    unique, conflict = split_duplicates(frame, ("sid", "tid"))
    if conflict.height:
        sid, tid = conflict.select("sid", "tid").row(0)
        when = dt.datetime.fromtimestamp((session.start_us + tid * MINUTE_US) / 1e6, dt.timezone.utc)
        floored = (
            f" once ts is floored to its minute ({counts['ts_floored']} rows had seconds: more than one bar a "
            "minute? aggregate them to minute bars)"
            if counts["ts_floored"]
            else ""
        )
        raise DataError(
            f"{source}: {conflict.height} rows share a (symbol, ts) with different values{floored}, e.g. "
            f"symbol={symbols[sid]!r} ts={when.isoformat()}; keep one row per symbol and minute"
        )
    counts["duplicate_rows"] = frame.height - unique.height
    return unique


def _flag_bad_values(
    frame: pl.DataFrame, n_symbols: int, counts: dict[str, int], by_minute: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Null out unusable quotes (null, non-finite, non-positive, crossed) and invalid trade fields; count each rule.

    With ``by_minute``, also each minute's counts (what real time reports for the minutes it closes).
    """
    quote_null = pl.any_horizontal(*[pl.col(c).is_null() for c in QUOTE])
    quote_nonfinite = ~quote_null & ~pl.all_horizontal(*[_finite(c) for c in QUOTE])
    quote_nonpositive = (
        ~quote_null
        & ~quote_nonfinite
        & ((pl.col("bid") <= 0) | (pl.col("ask") <= 0) | (pl.col("bid_size") < 0) | (pl.col("ask_size") < 0))
    )
    quote_crossed = ~quote_null & ~quote_nonfinite & ~quote_nonpositive & (pl.col("bid") > pl.col("ask"))
    bad_price = [pl.col(c).is_not_null() & ~(_finite(c) & (pl.col(c) > 0)) for c in TRADE_PRICES]
    bad_volume = ~(_finite("volume") & (pl.col("volume") >= 0))
    bad_count = pl.col("trade_count").is_not_null() & ~(_finite("trade_count") & (pl.col("trade_count") >= 0))
    frame = frame.with_columns(
        quote_null.alias("_qn"),
        quote_nonfinite.alias("_qf"),
        quote_nonpositive.alias("_qp"),
        quote_crossed.alias("_qc"),
        pl.any_horizontal(*bad_price, bad_volume, bad_count).alias("_ti"),
    )
    flags = frame.select(pl.col("_qn", "_qf", "_qp", "_qc", "_ti").sum()).row(0)
    minutes = None
    if by_minute:
        sums = [
            pl.col(flag).sum().cast(pl.Int64).alias(key)
            for flag, key in zip(("_qn", "_qf", "_qp", "_qc", "_ti"), _FLAGS)
        ]
        minutes = frame.group_by("tid").agg(pl.len().cast(pl.Int64).alias("rows_used"), *sums).sort("tid")
    counts.update({key: int(value) for key, value in zip(_FLAGS, flags)})
    unusable = pl.col("_qn") | pl.col("_qf") | pl.col("_qp") | pl.col("_qc")
    # a symbol without one usable quote all day stays on the grid, fully masked: no prediction rows
    counts["symbols_no_quote"] = n_symbols - frame.select(pl.col("sid").filter(~unusable).n_unique()).item()
    clean = frame.select(
        "sid",
        "tid",
        *[pl.when(unusable).then(None).otherwise(pl.col(c)).alias(c) for c in QUOTE],
        *[pl.when(_finite(c) & (pl.col(c) > 0)).then(pl.col(c)).alias(c) for c in TRADE_PRICES],
        pl.when(_finite("volume") & (pl.col("volume") >= 0)).then(pl.col("volume")).otherwise(0.0).alias("volume"),
        pl.when(_finite("trade_count") & (pl.col("trade_count") >= 0)).then(pl.col("trade_count")).alias("trade_count"),
    )
    return clean, minutes


def clean_rows(
    raw: pl.DataFrame,
    day: dt.date,
    symbols: list[str] | None,
    source: str,
    *,
    calendar: str = DEFAULT_CALENDAR,
    by_minute: bool = False,
) -> CleanRows:
    """Apply the cleaning rules; return rows keyed by (sid, tid), the symbols, the session length and the counts.

    ``calendar`` (an exchange's ISO MIC code) gives the day's regular session; ``by_minute``
    adds the counts of each minute (``CleanRows.by_minute``).
    """
    if not is_trading_day(day, calendar):
        raise DataError(
            f"{source}: {day} is not a trading day on {calendar} (weekend or holiday); drop that date's data"
        )
    _check_columns(raw, source)
    session = Session.of(day, calendar)
    counts = dict.fromkeys(COUNT_KEYS, 0)
    counts["rows_in"] = raw.height
    frame = _session_rows(raw, session, counts)
    if symbols is None and frame.is_empty():
        raise DataError(_outside_session(raw, day, source, counts, calendar))
    frame, symbols = _symbols(frame, symbols, counts)
    # the symbol's position in ``symbols``: an Enum's physical code (cheaper than a join on strings)
    frame = frame.with_columns(
        pl.col("symbol").cast(pl.Enum(symbols)).to_physical().cast(pl.Int32).alias("sid"),
        (pl.col("_off") // MINUTE_US).cast(pl.Int32).alias("tid"),
    ).drop("symbol", "_off")
    frame = _resolve_duplicates(frame, symbols, session, source, counts)
    counts["rows_used"] = frame.height
    clean, minutes = _flag_bad_values(frame, len(symbols), counts, by_minute)
    return CleanRows(clean, symbols, session.n_minutes, counts, minutes)

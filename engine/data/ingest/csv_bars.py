"""Paired minute quote bars and trade bars in CSV -> quote and trade frames.

The layout several US-equity minute vendors ship: a quote-bar file per day (or symbol) with
bid and ask open/high/low/close and sizes, and a trade-bar file with open/high/low/close,
volume and often a trade count and VWAP. Only the close of the quote bar is used (the raw
schema's ``bid``/``ask`` are the best quotes at the minute's close), with the sizes at the
close. One file holding both kinds of columns can be given as quotes and as trades.

Columns are found by name: ``CsvLayout.mapping`` (``--map bid=BidClose``) first, then the
common spellings in ``ALIASES``, case-insensitively. ``ts`` may name two columns joined
with ``+`` (``--map ts=Date+Time``). Timestamps are ISO-8601-like text (with an offset or
``Z``, or local time in ``CsvLayout.tz``) or integer epochs (unit from ``ts_unit`` or the
magnitude). Every cell is read as text and converted here, so a bad cell is an error that
names the file, the column, the line and the value, never a silently dropped row.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from tthf.engine.data.ingest.bars import QUOTE_SCHEMA, QUOTE_VALUES, TRADE_SCHEMA, TRADE_VALUES
from tthf.engine.data.ingest.sources import Source
from tthf.errors import DataError, UsageError

SUFFIXES = (".csv", ".csv.gz", ".txt", ".txt.gz")
ALIASES: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker", "sym"),
    "ts": ("ts", "timestamp", "time", "datetime", "window_start"),
    "bid": ("bid_close", "bid"),
    "ask": ("ask_close", "ask"),
    "bid_size": ("bid_size", "bid_close_size", "bid_sz"),
    "ask_size": ("ask_size", "ask_close_size", "ask_sz"),
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "close": ("close",),
    "volume": ("volume",),
    "trade_count": ("trade_count", "transactions", "trades"),
    "vwap": ("vwap",),
}
OPTIONAL = frozenset({"trade_count", "vwap"})
TS_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}  # microseconds per unit; ns divides
BAR_LABELS = ("start", "end")
_FIX_MAP = "name it with --map FIELD=COLUMN (or a --map-file)"


@dataclass(frozen=True)
class CsvLayout:
    """How to read the vendor's CSV files (every field has a CLI option of the same name)."""

    mapping: Mapping[str, str] = field(default_factory=dict)  # raw field -> vendor column
    tz: str | None = None  # zone of timestamps written without an offset, e.g. America/New_York
    ts_unit: str | None = None  # s, ms, us or ns for integer epochs; None: from the magnitude
    ts_format: str | None = None  # strftime format of text timestamps; None: inferred
    bar_label: str = "start"  # the bar's timestamp is its minute's start, or its end
    separator: str = ","
    null_values: tuple[str, ...] = ()

    def check(self) -> None:
        unknown = sorted(set(self.mapping) - set(ALIASES))
        if unknown:
            raise UsageError(f"--map: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(ALIASES)}")
        if self.ts_unit is not None and self.ts_unit not in TS_UNITS:
            raise UsageError(f"--ts-unit {self.ts_unit!r}: use one of {', '.join(TS_UNITS)}")
        if self.bar_label not in BAR_LABELS:
            raise UsageError(f"--bar-label {self.bar_label!r}: use start or end")
        if self.tz is not None:
            try:
                ZoneInfo(self.tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise UsageError(
                    f"--tz {self.tz!r} is not a time zone; use an IANA name such as America/New_York"
                ) from None


def parse_mapping(items: list[str]) -> dict[str, str]:
    """``["bid=BidClose,ask=AskClose", "ts=Date+Time"]`` -> ``{"bid": "BidClose", ...}``."""
    out = {}
    for item in (part for text in items for part in text.split(",") if part.strip()):
        name, sep, column = item.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise UsageError(f"--map {item!r}: write FIELD=COLUMN, e.g. bid=BidClose")
        out[name.strip()] = column.strip()
    return out


def load_mapping(text: str, source: str) -> dict[str, str]:
    """A mapping file: one JSON object of field -> column, e.g. ``{"bid": "BidClose"}``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f'{source}: not JSON ({exc}); write an object such as {{"bid": "BidClose"}}') from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UsageError(f"{source}: expected one JSON object of field -> column name strings")
    return {str(k): v for k, v in data.items()}


def _resolve(field_name: str, header: list[str], layout: CsvLayout, source: str) -> list[str] | None:
    """The file's column(s) for one raw field; None when no mapping or spelling matches."""
    by_lower = {c.lower(): c for c in header}
    if field_name in layout.mapping:
        wanted = layout.mapping[field_name].split("+") if field_name == "ts" else [layout.mapping[field_name]]
        missing = [w for w in wanted if w.lower() not in by_lower]
        if missing:
            raise DataError(
                f"{source}: --map {field_name}={layout.mapping[field_name]} but the file has no column "
                f"{missing[0]!r}; its columns are {header}"
            )
        return [by_lower[w.lower()] for w in wanted]
    for alias in ALIASES[field_name]:
        if alias in by_lower:
            return [by_lower[alias]]
    return None


def _required(field_name: str, header: list[str], layout: CsvLayout, source: str) -> list[str]:
    found = _resolve(field_name, header, layout, source)
    if found is None:
        raise DataError(
            f"{source}: no column for {field_name!r} (looked for {', '.join(ALIASES[field_name])}); "
            f"its columns are {header}; {_FIX_MAP}"
        )
    return found


def _text(data: bytes, source: Source, layout: CsvLayout) -> pl.DataFrame:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"{source.uri}: a damaged gzip file ({exc}); download it again") from exc
    try:
        return pl.read_csv(
            io.BytesIO(data),
            infer_schema=False,
            separator=layout.separator,
            null_values=list(layout.null_values) or None,
        )
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{source.uri}: not a readable CSV file ({exc}); check --separator and the file") from exc


def _bad_cell(raw: pl.Series, parsed: pl.Series, column: str, source: str, fix: str) -> None:
    """Raise for the first cell that has text but did not convert."""
    bad = raw.is_not_null() & parsed.is_null()
    if bad.any():
        row = int(bad.arg_max())  # type: ignore[arg-type]
        raise DataError(f"{source}: column {column!r} line {row + 2}: {raw[row]!r} {fix} ({bad.sum()} such cell(s))")


def _number(raw: pl.Series, dtype: pl.DataType, column: str, source: str) -> pl.Series:
    raw = raw.str.strip_chars()
    parsed = raw.cast(dtype, strict=False)
    what = "an integer" if dtype == pl.Int64 else "a number"
    _bad_cell(raw, parsed, column, source, f"is not {what}; fix the file or add the token to --null-value")
    return parsed


def _epoch(raw: pl.Series, column: str, layout: CsvLayout, source: str) -> pl.Series:
    values = raw.cast(pl.Int64)
    unit = layout.ts_unit
    if unit is None:  # seconds ~1e9, milliseconds ~1e12, microseconds ~1e15, nanoseconds ~1e18 (years 2001-2286)
        digits = values.drop_nulls().abs().cast(pl.String).str.len_chars().unique().to_list()
        found = {{10: "s", 13: "ms", 16: "us", 19: "ns"}.get(n) for n in digits}
        if len(found) != 1 or None in found:
            raise DataError(
                f"{source}: column {column!r} holds integers whose unit cannot be told from their size; "
                "pass --ts-unit s, ms, us or ns"
            )
        unit = found.pop()
    assert unit is not None
    scale = TS_UNITS[unit]
    us = values // 1000 if scale is None else values * scale
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _text_time(raw: pl.Series, column: str, layout: CsvLayout, source: str) -> pl.Series:
    """Text timestamps (parsed eagerly: polars infers a format with an offset only on a Series)."""
    try:
        parsed = raw.str.to_datetime(format=layout.ts_format, time_unit="us", strict=False)
    except pl.exceptions.ComputeError:  # no format given and polars could not infer one
        row = int(raw.is_not_null().arg_max() or 0)
        raise DataError(
            f"{source}: column {column!r}: cannot tell the timestamp format of {raw[row]!r} "
            f"(line {row + 2}); pass --ts-format (strftime, e.g. '%Y-%m-%d %H:%M:%S')"
        ) from None
    _bad_cell(raw, parsed, column, source, "is not a timestamp; pass --ts-format (strftime, e.g. '%Y-%m-%d %H:%M:%S')")
    if getattr(parsed.dtype, "time_zone", None) is not None:
        return parsed.dt.convert_time_zone("UTC")
    if layout.tz is None:
        raise DataError(
            f"{source}: column {column!r} has timestamps without a time zone (e.g. "
            f"{raw.drop_nulls()[0]!r}); pass --tz with the vendor's zone, e.g. --tz America/New_York "
            "or --tz UTC"
        )
    local = parsed.dt.replace_time_zone(layout.tz, ambiguous="raise", non_existent="raise")
    return local.dt.convert_time_zone("UTC")


def _timestamps(frame: pl.DataFrame, columns: list[str], layout: CsvLayout, source: str) -> pl.Series:
    """UTC minute starts from the vendor's timestamp column(s)."""
    name = "+".join(columns)
    raw = frame.select(pl.concat_str([pl.col(c).str.strip_chars() for c in columns], separator=" ")).to_series()
    if len(columns) == 1 and raw.str.contains(r"^-?\d+$").all():
        ts = _epoch(raw, name, layout, source)
    else:
        ts = _text_time(raw, name, layout, source)
    if layout.bar_label == "end":
        ts = ts - dt.timedelta(minutes=1)
    if (ts.dt.epoch("us") % 60_000_000 != 0).any():
        raise DataError(
            f"{source}: column {name!r} has timestamps that are not whole minutes; tthf reads 1-minute "
            "bars stamped at a minute boundary (check --ts-unit, or that these are minute bars)"
        )
    return ts.alias("ts")


def read_side(source: Source, index: int, side: str, layout: CsvLayout) -> pl.DataFrame:
    """One file as a quote frame (``side="quotes"``) or a trade frame (``side="trades"``)."""
    frame = _text(source.read(), source, layout)
    values = QUOTE_VALUES if side == "quotes" else TRADE_VALUES
    schema = QUOTE_SCHEMA if side == "quotes" else TRADE_SCHEMA
    header = frame.columns
    symbol = _required("symbol", header, layout, source.uri)[0]
    try:
        ts = _timestamps(frame, _required("ts", header, layout, source.uri), layout, source.uri)
    except pl.exceptions.PolarsError as exc:  # e.g. a local time that does not exist or repeats at a DST change
        raise DataError(f"{source.uri}: {exc}; give UTC timestamps or check --tz") from exc
    out = [frame.get_column(symbol).str.strip_chars().alias("symbol"), ts]
    for name in values:
        found = (_resolve if name in OPTIONAL else _required)(name, header, layout, source.uri)
        if found is None:
            out.append(pl.Series(name, [None] * frame.height, dtype=schema[name]))
        else:
            out.append(_number(frame.get_column(found[0]), schema[name], found[0], source.uri).alias(name))
    return pl.DataFrame(out).with_columns(pl.lit(index, pl.Int32).alias("_file")).select(list(schema))

"""Databento DBN files (``bbo-1m``, ``cbbo-1m`` quotes; ``ohlcv-1m`` trades) -> quote and trade frames.

What the format carries (databento.com/docs/schemas, checked against databento-dbn's record
classes):

- ``bbo-1m`` / ``cbbo-1m``: one record per instrument and minute in which the book or a trade
  changed; none for a quiet minute. ``ts_recv`` is the *end* of the interval, clamped to the
  minute boundary, so the raw schema's ``ts`` (the start of the minute) is ``ts_recv`` minus
  one minute (``floor_minute(ts_recv - 1 ns)``, which also places an unclamped stamp in its
  minute). ``bid_px_00``/``ask_px_00`` are the best bid and offer at the end of the minute
  (Databento forward-fills them from the previous minute when only a trade happened), in
  fixed point (1 unit = 1e-9) with ``UNDEF_PRICE`` for an empty side, which becomes null
  with its size. The record's last-sale fields are not minute bars and are not used.
- ``ohlcv-1m``: one bar per instrument and minute that traded; ``ts_event`` is the start of
  the minute; prices in fixed point; no trade count or VWAP.
- Records carry a numeric ``instrument_id``; the file's metadata maps each requested symbol
  to its instrument id over date intervals ``[start_date, end_date)``, looked up by the UTC
  date of the record's index timestamp (as Databento's own symbology does).

Decoding is vectorized: ``databento-dbn`` parses the metadata and upgrades older DBN versions,
and the records are viewed with the record classes' own numpy layout (``_dtypes``, the one
Databento's Python client decodes with), about 1e7 records a second instead of 1e6 for
one Python object per record. Zstandard files are decompressed with pyarrow.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from tthf.engine.data.calendar import session_bounds
from tthf.engine.data.ingest.bars import QUOTE_SCHEMA, TRADE_SCHEMA
from tthf.errors import DataError, UsageError

SUFFIXES = (".dbn", ".dbn.zst")
QUOTE_SCHEMAS = ("bbo-1m", "cbbo-1m")
TRADE_SCHEMAS = ("ohlcv-1m",)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_MINUTE_NS = 60_000_000_000
_UNITS = 1e9  # fixed-point units per dollar (databento_dbn.FIXED_PRICE_SCALE)


@dataclass(frozen=True)
class DbnFile:
    """One decoded file: its schema, its records and its instrument-id -> symbol intervals."""

    source: str
    schema: str
    records: np.ndarray
    symbols: pl.DataFrame  # instrument_id u32, start_date, end_date (exclusive), symbol
    start_ns: int
    end_ns: int


def _dbn():  # -> module databento_dbn
    try:
        import databento_dbn
    except ImportError as exc:
        raise UsageError("reading DBN files needs the databento-dbn package: pip install 'tthf[ingest]'") from exc
    return databento_dbn


def _plain(data: bytes, source: str) -> bytes:
    """Uncompressed DBN bytes of the current DBN version."""
    d = _dbn()
    if data[:4] == _ZSTD_MAGIC:
        try:
            data = pa.input_stream(pa.py_buffer(data), compression="zstd").read()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{source}: a damaged Zstandard file ({exc}); download it again") from exc
    if data[:3] != b"DBN":
        raise DataError(
            f"{source}: not a DBN file (it starts with {data[:8]!r}); give Databento .dbn or .dbn.zst files"
        )
    if data[3] != d.DBN_VERSION:
        out = io.BytesIO()
        try:
            coder = d.Transcoder(
                out, d.Encoding.DBN, d.Compression.NONE, upgrade_policy=d.VersionUpgradePolicy.UPGRADE_TO_V3
            )
            coder.write(data)
            coder.finish()
        except d.DBNError as exc:
            raise DataError(f"{source}: cannot upgrade DBN version {data[3]} ({exc}); download it again") from exc
        data = out.getvalue()
    return data


def _symbols(metadata, source: str) -> pl.DataFrame:  # metadata: databento_dbn.Metadata
    stype_in = getattr(metadata.stype_in, "value", metadata.stype_in)
    try:
        rows = [
            (int(iv["symbol"]), iv["start_date"], iv["end_date"], symbol)
            for symbol, intervals in metadata.mappings.items()
            for iv in intervals
            if iv["symbol"]  # an empty instrument id: the symbol did not resolve that day
        ]
    except ValueError:
        raise DataError(
            f"{source}: the symbol mappings do not map to instrument ids (stype_out="
            f"{getattr(metadata.stype_out, 'value', metadata.stype_out)}); request stype_out "
            "'instrument_id', Databento's default"
        ) from None
    if not rows:
        raise DataError(
            f"{source}: the metadata maps no symbol to an instrument id (stype_in={stype_in}); "
            "request the data with stype_in='raw_symbol' so the file says which ticker each record is"
        )
    schema = {"instrument_id": pl.UInt32, "start_date": pl.Date, "end_date": pl.Date, "symbol": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row")


def decode(data: bytes, source: str) -> DbnFile:
    """Metadata and records of one DBN file (any version, plain or Zstandard)."""
    d = _dbn()
    data = _plain(data, source)
    try:
        metadata = d.Metadata.decode(data)
    except d.DBNError as exc:
        raise DataError(f"{source}: unreadable DBN metadata ({exc}); download the file again") from exc
    schema = getattr(metadata.schema, "value", metadata.schema)  # a Schema enum, or None for mixed schemas
    record_type = {"bbo-1m": d.BBOMsg, "cbbo-1m": d.CBBOMsg, "ohlcv-1m": d.OHLCVMsg}.get(schema or "")
    if record_type is None:
        raise DataError(
            f"{source}: schema {schema!r} is not supported; tthf needs 1-minute bars: "
            f"quotes in {' or '.join(QUOTE_SCHEMAS)}, trades in {' or '.join(TRADE_SCHEMAS)}"
        )
    layout = np.dtype(record_type._dtypes + ([("ts_out", "u8")] if metadata.ts_out else []))
    body = memoryview(data)[8 + int.from_bytes(data[4:8], "little") :]
    if len(body) % layout.itemsize:
        raise DataError(f"{source}: {len(body)} bytes of records are not whole {schema} records; the file is truncated")
    records = np.frombuffer(body, dtype=layout)
    rtype = d.RType.from_schema(d.Schema.from_str(schema)).value
    if records.size and ((records["rtype"] != rtype).any() or (records["length"] * 4 != layout.itemsize).any()):
        raise DataError(f"{source}: records of other types than {schema} (a live stream?); give historical files")
    end = metadata.end if metadata.end and metadata.end != d.UNDEF_TIMESTAMP else 0
    return DbnFile(source, schema, records, _symbols(metadata, source), metadata.start, end)


def _index_frame(
    f: DbnFile, ts_index: np.ndarray, index: int, publisher: int | None, drops: Counter[str]
) -> tuple[pl.DataFrame, np.ndarray]:
    """Symbols for each record (by instrument id and UTC date), with the kept record positions."""
    keep = np.ones(len(f.records), dtype=bool)
    if publisher is not None:
        keep = f.records["publisher_id"] == publisher
        drops["other_publisher"] += int((~keep).sum())
    else:
        venues = np.unique(f.records["publisher_id"])
        if venues.size > 1:
            raise DataError(
                f"{f.source}: records of {venues.size} publishers (venues {', '.join(map(str, venues))}) for the same "
                "instruments; pass --publisher ID to keep one venue, or use a consolidated schema (cbbo-1m)"
            )
    frame = pl.DataFrame(
        {
            "_row": np.flatnonzero(keep),
            "instrument_id": f.records["instrument_id"][keep],
            "_day": ts_index[keep].astype("datetime64[ns]").astype("datetime64[D]"),
        }
    )
    mapped = frame.join(f.symbols, on="instrument_id", how="inner").filter(
        (pl.col("_day") >= pl.col("start_date")) & (pl.col("_day") < pl.col("end_date"))
    )
    drops["unmapped_instrument"] += frame.height - mapped.height
    return mapped.select("symbol", pl.lit(index, pl.Int32).alias("_file")), mapped.get_column("_row").to_numpy()


def _price(values: np.ndarray) -> np.ndarray:
    """Fixed-point prices as float dollars, NaN where undefined (division rounds 1e-9 units exactly)."""
    return np.where(values == _dbn().UNDEF_PRICE, np.nan, values / _UNITS)


def _nullable(values: np.ndarray) -> pl.Series:
    return pl.Series(values, dtype=pl.Float64).fill_nan(None)


def _ts(ns: np.ndarray) -> pl.Series:
    return pl.Series(ns.astype("datetime64[ns]").astype("datetime64[us]")).dt.replace_time_zone("UTC")


def quotes_frame(f: DbnFile, index: int, publisher: int | None, drops: Counter[str]) -> pl.DataFrame:
    """``bbo-1m``/``cbbo-1m`` records as quote rows: ts = start of the minute, an empty side null."""
    ts_recv = f.records["ts_recv"].astype(np.int64)
    keys, rows = _index_frame(f, ts_recv, index, publisher, drops)
    r = f.records[rows]
    start = (ts_recv[rows] - 1) // _MINUTE_NS * _MINUTE_NS
    bid, ask = _price(r["bid_px_00"]), _price(r["ask_px_00"])
    return keys.with_columns(
        _ts(start).alias("ts"),
        _nullable(bid).alias("bid"),
        _nullable(ask).alias("ask"),
        _nullable(np.where(np.isnan(bid), np.nan, r["bid_sz_00"])).alias("bid_size"),
        _nullable(np.where(np.isnan(ask), np.nan, r["ask_sz_00"])).alias("ask_size"),
    ).select(list(QUOTE_SCHEMA))


def trades_frame(f: DbnFile, index: int, publisher: int | None, drops: Counter[str]) -> pl.DataFrame:
    """``ohlcv-1m`` records as trade rows: ts = ts_event (the start of the minute)."""
    ts_event = f.records["ts_event"].astype(np.int64)
    keys, rows = _index_frame(f, ts_event, index, publisher, drops)
    r = f.records[rows]
    return keys.with_columns(
        _ts(ts_event[rows]).alias("ts"),
        *[_nullable(_price(r[c])).alias(c) for c in ("open", "high", "low", "close")],
        pl.Series(r["volume"], dtype=pl.Float64).alias("volume"),
        pl.lit(None, pl.Int64).alias("trade_count"),
        pl.lit(None, pl.Float64).alias("vwap"),
    ).select(list(TRADE_SCHEMA))


def uncovered_days(days: list[dt.date], trade_files: list[DbnFile]) -> list[dt.date]:
    """Trading days whose regular session no trades file's time range fully covers.

    On those days a minute without an ``ohlcv-1m`` bar would not mean "nothing traded".
    """
    spans = []
    for f in trade_files:
        end = f.end_ns
        if not end and f.records.size:  # no query end recorded: the file covers up to its last bar
            end = int(f.records["ts_event"].max()) + _MINUTE_NS
        spans.append((f.start_ns, end))
    out = []
    for day in days:
        open_, close = (int(t.timestamp()) * 1_000_000_000 for t in session_bounds(day))
        if not any(start <= open_ and close <= end for start, end in spans):
            out.append(day)
    return out

"""The raw-data contract: minutely BBO bars, one hive partition per trading date.

``{data_root}/date=YYYY-MM-DD/*.parquet`` under a local folder or ``s3://bucket/prefix``
(docs/data.md). Reading validates every file against ``RAW_SCHEMA`` and casts compatible
types to the canonical ones, so everything downstream sees one schema. Rows are not
cleaned here (features.py owns the cleaning rules); the only rows removed are exact
duplicates, which carry no information. Duplicates of ``(symbol, ts)`` that disagree
cannot be resolved safely and are a ``DataError``.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tthf.engine.data.calendar import NEW_YORK
from tthf.engine.store import Store, as_store
from tthf.errors import DataError, KeyNotFoundError, NoDataError

TS_TYPE = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    required: bool = True


RAW_SCHEMA: tuple[Column, ...] = (
    Column("symbol", pa.string(), nullable=False),
    Column("ts", TS_TYPE, nullable=False),
    Column("bid", pa.float64(), nullable=True),
    Column("ask", pa.float64(), nullable=True),
    Column("bid_size", pa.float64(), nullable=True),
    Column("ask_size", pa.float64(), nullable=True),
    Column("open", pa.float64(), nullable=True),
    Column("high", pa.float64(), nullable=True),
    Column("low", pa.float64(), nullable=True),
    Column("close", pa.float64(), nullable=True),
    Column("volume", pa.float64(), nullable=False),
    Column("trade_count", pa.int64(), nullable=True, required=False),
    Column("vwap", pa.float64(), nullable=True, required=False),
)
RAW_COLUMNS = tuple(c.name for c in RAW_SCHEMA)
ARROW_SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in RAW_SCHEMA])

#: key of the ``counts`` entry filled by ``read_day``
DUPLICATES_DROPPED = "duplicate_rows_dropped"

_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_FIX_WRITE = "fix the writer (see docs/data.md, 'Schema and validation') and re-write the file"


def partition(day: dt.date) -> str:
    return f"date={day.isoformat()}"


def _cast(col: Column, array: pa.ChunkedArray, source: str) -> pa.ChunkedArray:
    """Cast one column to its canonical type, or explain what the file has instead."""
    have = array.type
    if pa.types.is_dictionary(have):
        array, have = array.cast(have.value_type), have.value_type
    if have == col.type:
        return array
    ok = False
    if col.type == pa.string():
        ok = pa.types.is_string(have) or pa.types.is_large_string(have) or pa.types.is_string_view(have)
    elif col.type == TS_TYPE:
        if pa.types.is_timestamp(have) and have.tz is None:
            raise DataError(
                f"{source}: column 'ts' holds naive timestamps ({have}); expected {TS_TYPE}. "
                "Write UTC timestamps (e.g. polars .dt.replace_time_zone('UTC') after converting to UTC)"
            )
        ok = pa.types.is_timestamp(have)
        if ok:  # any unit or zone names the same instants; sub-microsecond digits are truncated
            return pc.cast(array, TS_TYPE, safe=False)
    elif col.type == pa.float64():
        ok = pa.types.is_floating(have) or pa.types.is_integer(have) or pa.types.is_null(have)
    elif col.type == pa.int64():
        ok = pa.types.is_integer(have) or pa.types.is_null(have)
    if not ok:
        raise DataError(
            f"{source}: column {col.name!r} has type {have}, expected {col.type}; {_FIX_WRITE}"
        )
    try:
        return pc.cast(array, col.type)
    except pa.ArrowInvalid as exc:  # e.g. uint64 values beyond int64
        raise DataError(f"{source}: column {col.name!r} ({have}) does not fit {col.type}: {exc}; {_FIX_WRITE}") from exc


def conform(table: pa.Table, source: str) -> pa.Table:
    """Validate ``table`` against RAW_SCHEMA and return it in canonical types and column order.

    Extra columns are dropped; absent optional columns are added as nulls.
    """
    columns = []
    for col in RAW_SCHEMA:
        if col.name not in table.column_names:
            if col.required:
                raise DataError(
                    f"{source}: required column {col.name!r} ({col.type}) is missing; "
                    f"the file has {table.column_names}. {_FIX_WRITE}"
                )
            columns.append(pa.nulls(table.num_rows, col.type))
            continue
        if table.column_names.count(col.name) > 1:
            raise DataError(f"{source}: column {col.name!r} appears more than once; {_FIX_WRITE}")
        array = _cast(col, table.column(col.name), source)
        if not col.nullable and array.null_count:
            row = pc.index(pc.is_null(array), True).as_py()
            raise DataError(
                f"{source}: column {col.name!r} has {array.null_count} null value(s) (first at row {row}) "
                f"but must not be null; {_FIX_WRITE}"
            )
        columns.append(array)
    return pa.Table.from_arrays(columns, schema=ARROW_SCHEMA)


def _check_partition_date(table: pl.DataFrame, day: dt.date, source: str) -> None:
    """A file whose rows all fall on another New York date was written to the wrong partition."""
    if table.height == 0:
        return
    local = table.get_column("ts").dt.convert_time_zone(str(NEW_YORK)).dt.date()
    if not (local == day).any():
        raise DataError(
            f"{source}: partition date={day} but its ts values fall on {local.min()!s}..{local.max()!s} "
            "(New York time); move the file to the partition of its trading date"
        )


def day_key(day: dt.date, part: str = "part-0") -> str:
    """The key of one file of a date's partition."""
    return f"{partition(day)}/{part}.parquet"


def encode_day(day: dt.date, table: pl.DataFrame, source: str) -> bytes:
    """Validate ``table`` as ``day``'s raw bars and encode it as a Parquet file (zstd)."""
    canon = conform(table.to_arrow(), source)
    _check_partition_date(pl.from_arrow(canon), day, source)  # type: ignore[arg-type]
    buf = io.BytesIO()
    pq.write_table(canon, buf, compression="zstd")
    return buf.getvalue()


def write_day(root: Store | str, day: dt.date, table: pl.DataFrame, *, part: str = "part-0") -> str:
    """Validate ``table`` and write it atomically as ``date=YYYY-MM-DD/{part}.parquet``; returns its URI."""
    store = as_store(root)
    key = day_key(day, part)
    store.write_bytes(key, encode_day(day, table, store.uri(key)))
    return store.uri(key)


def list_dates(root: Store | str) -> list[dt.date]:
    """Dates whose partition holds at least one Parquet file, ascending (one listing call)."""
    store = as_store(root)
    dates = set()
    for key in store.list(""):
        head, _, name = key.partition("/")
        if "/" in name or not name.endswith(".parquet"):
            continue
        match = _PARTITION.match(head)
        if not match:
            continue
        try:
            dates.add(dt.date.fromisoformat(match.group(1)))
        except ValueError as exc:
            raise DataError(f"{store.uri(head)}: {head!r} is not a valid date; rename the folder to date=YYYY-MM-DD") from exc
    return sorted(dates)


def _read_file(store: Store, key: str, day: dt.date) -> pl.DataFrame:
    source = store.uri(key)
    data = store.read_bytes(key)
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{source}: not a readable Parquet file ({exc}); re-write or delete it") from exc
    frame = pl.from_arrow(conform(table, source))
    assert isinstance(frame, pl.DataFrame)
    _check_partition_date(frame, day, source)
    return frame


def split_duplicates(frame: pl.DataFrame, key: Sequence[str], *, subset: Sequence[str] | None = None
                     ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(``frame`` without exact repeats, the rows left that share a ``key`` with different values).

    The one rule for duplicates, used on raw files and on clean rows: an exact repeat
    carries no information and is dropped; two rows of one key that disagree cannot be
    resolved safely and the caller reports them. ``subset`` names the columns that
    make rows equal (default: all).
    """
    unique = frame.unique(subset=list(subset) if subset is not None else None, keep="first", maintain_order=True)
    return unique, unique.filter(pl.struct(*key).is_duplicated())


def read_day(root: Store | str, day: dt.date, *, counts: dict[str, int] | None = None) -> pl.DataFrame:
    """All rows of ``day`` in canonical types (RAW_SCHEMA order), file by file in key order.

    Exact duplicate rows are dropped; if ``counts`` is given, ``counts[DUPLICATES_DROPPED]``
    is increased by how many. Rows are otherwise returned as stored.
    """
    store = as_store(root)
    folder = partition(day)
    keys = [k for k in store.list(folder) if k.endswith(".parquet")]
    if not keys:
        raise NoDataError(
            f"no data for {day}: {store.uri(folder)} has no .parquet files; "
            "pick a date that has data or generate it with tthf-synth"
        )
    frames = []
    for index, key in enumerate(keys):
        try:
            frames.append(_read_file(store, key, day).with_columns(pl.lit(index, pl.Int32).alias("_file")))
        except KeyNotFoundError as exc:  # deleted between the listing and the read
            raise NoDataError(f"no data for {day}: {exc}; the data root changed while reading, retry") from exc
    table = pl.concat(frames)
    dropped = 0
    if table.select(pl.struct("symbol", "ts").is_duplicated().any()).item():
        unique, conflict = split_duplicates(table, ("symbol", "ts"), subset=RAW_COLUMNS)
        if conflict.height:
            symbol, ts = conflict.row(0)[:2]
            files = conflict.filter((pl.col("symbol") == symbol) & (pl.col("ts") == ts)).get_column("_file").unique()
            where = ", ".join(store.uri(keys[i]) for i in sorted(files.to_list()))
            raise DataError(
                f"{where}: {conflict.height} rows share a (symbol, ts) with different values, e.g. "
                f"symbol={symbol!r} ts={ts.isoformat()}; keep one row per symbol and minute and re-write the partition"
            )
        dropped = table.height - unique.height
        table = unique
    if counts is not None:
        counts[DUPLICATES_DROPPED] = counts.get(DUPLICATES_DROPPED, 0) + dropped
    return table.drop("_file")

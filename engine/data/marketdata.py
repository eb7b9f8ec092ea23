"""The raw-data contract: minutely BBO bars, one hive partition per trading date.

``{data_root}/date=YYYY-MM-DD/*.parquet`` under a local folder or ``s3://bucket/prefix``
(docs/data.md). Reading validates every file against ``RAW_SCHEMA`` and casts compatible
types to the canonical ones, so everything downstream sees one schema. Rows are not
cleaned here (engine/features owns the cleaning rules and counts a null where a value is
unusable); the only rows removed are exact duplicates, which carry no information, and the
rows of a file written to another date's partition. A problem confined to some rows never
fails the date; only a file that cannot be read as the schema does (unreadable, a required
column missing or of an incompatible type) and duplicates of ``(symbol, ts)`` that disagree,
which cannot be resolved safely.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tthf.engine.data.calendar import DEFAULT_CALENDAR, timezone
from tthf.engine.store import Store, as_store
from tthf.errors import DataError, KeyNotFoundError, NoDataError

TS_TYPE = pa.timestamp("us", tz="UTC")
log = logging.getLogger("tthf.data")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    required: bool = True


RAW_SCHEMA: tuple[Column, ...] = (
    Column("symbol", pa.string(), nullable=False),
    Column("ts", TS_TYPE, nullable=False),
    # a null quote: the feed sent no quote update that minute (the cleaning carries the last one forward)
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
#: what reading returns: nulls anywhere, for the cleaning to count (null_key, trade_invalid)
_READ_SCHEMA = pa.schema([pa.field(c.name, c.type) for c in RAW_SCHEMA])

#: keys of the ``counts`` entries filled by ``read_day``
DUPLICATES_DROPPED = "duplicate_rows_dropped"
WRONG_PARTITION = "wrong_partition_rows"

_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_FIX_WRITE = "fix the writer (see docs/data.md, 'Schema and validation') and re-write the file"


def partition(day: dt.date) -> str:
    return f"date={day.isoformat()}"


def _cast(col: Column, array: pa.ChunkedArray, source: str) -> pa.ChunkedArray:
    """Cast one column to its canonical type, or explain what the file has instead.

    Numbers are cast unchecked, so no value can fail the file: an integer beyond float64's
    53-bit mantissa rounds, and a uint64 beyond int64 (a ``-1`` sentinel written unsigned)
    wraps to a negative count, which the cleaning counts as ``trade_invalid``.
    """
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
        ok = pa.types.is_timestamp(have)  # any unit or zone names the same instants; sub-us digits are truncated
    elif col.type == pa.float64():
        ok = pa.types.is_floating(have) or pa.types.is_integer(have) or pa.types.is_null(have)
    elif col.type == pa.int64():
        ok = pa.types.is_integer(have) or pa.types.is_null(have)
    if not ok:
        raise DataError(f"{source}: column {col.name!r} has type {have}, expected {col.type}; {_FIX_WRITE}")
    if col.type != pa.string():
        return pc.cast(array, col.type, safe=False)
    try:
        return pc.cast(array, col.type)
    except pa.ArrowInvalid as exc:  # e.g. a large_string column beyond string's 2 GiB of offsets
        raise DataError(f"{source}: column {col.name!r} ({have}) does not fit {col.type}: {exc}; {_FIX_WRITE}") from exc


def case_renames(have: Sequence[str], want: Sequence[str] = RAW_COLUMNS) -> dict[str, str]:
    """The renames that would give ``have`` the names of ``want`` it differs from only in case.

    ``{"Bid": "bid", "TS": "ts"}``: column names are matched exactly (a file's ``Bid`` is
    not ``bid``, so a file cannot be half-read by accident), and this says what to rename.
    """
    lower: dict[str, str] = {}
    for name in have:
        lower.setdefault(name.lower(), name)
    return {lower[name.lower()]: name for name in want if name not in have and name.lower() in lower}


def rename_hint(renames: dict[str, str]) -> str:
    """``renames`` as a sentence for an error message ('' when there is nothing to rename)."""
    if not renames:
        return ""
    pairs = ", ".join(f"{have}->{want}" for have, want in renames.items())
    return f"column names are case-sensitive: rename {pairs}. "


def _missing(columns: list[Column], have: list[str], source: str) -> DataError:
    """A file without required columns: which, the file's columns and, for case-only differences, the renames."""
    names = ", ".join(f"{c.name!r} ({c.type})" for c in columns)
    what = f"required column {names} is missing" if len(columns) == 1 else f"required columns {names} are missing"
    return DataError(f"{source}: {what}; the file has {have}. {rename_hint(case_renames(have))}{_FIX_WRITE}")


def conform(
    table: pa.Table, source: str, *, strict: bool = False, file_columns: Sequence[str] | None = None
) -> pa.Table:
    """Validate ``table`` against RAW_SCHEMA and return it in canonical types and column order.

    Extra columns are dropped; absent optional columns are added as nulls. Only the
    table's shape can fail it (a required column missing, twice, or of an incompatible
    type): nulls are left for the cleaning to count, except with ``strict``, which
    ``write_day`` uses so that what tthf writes keeps ``symbol``, ``ts`` and ``volume``
    non-null as the contract says. ``file_columns`` are the file's column names when
    ``table`` holds only some of them, so that messages list what the file has.
    """
    have = list(file_columns) if file_columns is not None else table.column_names
    missing = [col for col in RAW_SCHEMA if col.required and col.name not in table.column_names]
    if missing:
        raise _missing(missing, have, source)
    for wrong, name in case_renames(have).items():  # optional columns only: the required ones are all there
        log.warning(
            "%s: column %r is ignored and the optional %r is read as null (names are case-sensitive); rename %s->%s",
            source,
            wrong,
            name,
            wrong,
            name,
        )
    columns = []
    for col in RAW_SCHEMA:
        if col.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, col.type))
            continue
        if table.column_names.count(col.name) > 1:
            raise DataError(f"{source}: column {col.name!r} appears more than once; {_FIX_WRITE}")
        array = _cast(col, table.column(col.name), source)
        if strict and not col.nullable and array.null_count:
            row = pc.index(pc.is_null(array), True).as_py()
            raise DataError(
                f"{source}: column {col.name!r} has {array.null_count} null value(s) (first at row {row}) "
                f"but must not be null; {_FIX_WRITE}"
            )
        columns.append(array)
    return pa.Table.from_arrays(columns, schema=ARROW_SCHEMA if strict else _READ_SCHEMA)


def _wrong_partition(table: pl.DataFrame, day: dt.date, source: str, calendar: str = DEFAULT_CALENDAR) -> str:
    """Why a file whose rows all fall on another exchange-local date is not ``day``'s ('' if it is).

    Rows without a ``ts`` say nothing about the date (the cleaning counts them as null_key).
    """
    local = table.get_column("ts").drop_nulls().dt.convert_time_zone(str(timezone(calendar))).dt.date()
    if local.is_empty() or (local == day).any():
        return ""
    return (
        f"{source}: partition date={day} but its ts values fall on {local.min()!s}..{local.max()!s} "
        f"({calendar} local time); move the file to the partition of its trading date"
    )


def day_key(day: dt.date, part: str = "part-0") -> str:
    """The key of one file of a date's partition."""
    return f"{partition(day)}/{part}.parquet"


def encode_day(day: dt.date, table: pl.DataFrame, source: str, calendar: str = DEFAULT_CALENDAR) -> bytes:
    """Validate ``table`` as ``day``'s raw bars and encode it as a Parquet file (zstd)."""
    canon = conform(table.to_arrow(), source, strict=True)
    wrong = _wrong_partition(pl.from_arrow(canon), day, source, calendar)  # type: ignore[arg-type]
    if wrong:
        raise DataError(wrong)
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
            raise DataError(
                f"{store.uri(head)}: {head!r} is not a valid date; rename the folder to date=YYYY-MM-DD"
            ) from exc
    return sorted(dates)


def _read_table(data: bytes, source: str) -> tuple[pa.Table, list[str]]:
    """The file's columns of the raw schema only (extra columns are never decoded), and all its column names.

    A file that names a schema column twice is read whole, for ``conform`` to refuse it.
    """
    try:
        file = pq.ParquetFile(io.BytesIO(data))
        names = file.schema_arrow.names
        wanted = [name for name in RAW_COLUMNS if name in names]
        twice = any(names.count(name) > 1 for name in wanted)
        return file.read(columns=None if twice else wanted), names
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{source}: not a readable Parquet file ({exc}); re-write or delete it") from exc


def _read_file(store: Store, key: str) -> pl.DataFrame:
    source = store.uri(key)
    table, names = _read_table(store.read_bytes(key), source)
    frame = pl.from_arrow(conform(table, source, file_columns=names))
    assert isinstance(frame, pl.DataFrame)
    return frame


def split_duplicates(
    frame: pl.DataFrame, key: Sequence[str], *, subset: Sequence[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(``frame`` without exact repeats, the rows left that share a ``key`` with different values).

    The one rule for duplicates, used on raw files and on clean rows: an exact repeat
    carries no information and is dropped; two rows of one key that disagree cannot be
    resolved safely and the caller reports them. ``subset`` names the columns that
    make rows equal (default: all).
    """
    unique = frame.unique(subset=list(subset) if subset is not None else None, keep="first", maintain_order=True)
    return unique, unique.filter(pl.struct(*key).is_duplicated())


def read_day(
    root: Store | str, day: dt.date, *, counts: dict[str, int] | None = None, calendar: str = DEFAULT_CALENDAR
) -> pl.DataFrame:
    """All rows of ``day`` in canonical types (RAW_SCHEMA order), file by file in key order.

    Rows are returned as stored, except: exact duplicate rows are dropped, and so are the
    rows of a file whose rows all fall on another exchange-local date (written to the wrong
    partition; a warning names it). If ``counts`` is given, ``counts[DUPLICATES_DROPPED]``
    and ``counts[WRONG_PARTITION]`` are increased by how many. When every file of the
    date is in the wrong partition, the date has no data of its own: a ``DataError``.
    """
    store = as_store(root)
    folder = partition(day)
    keys = [k for k in store.list(folder) if k.endswith(".parquet")]
    if not keys:
        raise NoDataError(
            f"no data for {day}: {store.uri(folder)} has no .parquet files; "
            "pick a date that has data or generate it with tthf-synth"
        )
    frames, misplaced, wrong = [], 0, ""
    for index, key in enumerate(keys):
        try:
            frame = _read_file(store, key)
        except KeyNotFoundError as exc:  # deleted between the listing and the read
            raise NoDataError(f"no data for {day}: {exc}; the data root changed while reading, retry") from exc
        wrong = _wrong_partition(frame, day, store.uri(key), calendar)
        if wrong:
            log.warning("%s; its %d rows are ignored", wrong, frame.height)
            misplaced += frame.height
            continue
        frames.append(frame.with_columns(pl.lit(index, pl.Int32).alias("_file")))
    if not frames:
        raise DataError(wrong)
    table = pl.concat(frames)
    dropped = 0
    if table.select(pl.struct("symbol", "ts").is_duplicated().any()).item():
        unique, conflict = split_duplicates(table, ("symbol", "ts"), subset=RAW_COLUMNS)
        keyed = pl.col("symbol").is_not_null() & pl.col("ts").is_not_null()  # null keys: dropped by the cleaning
        conflict = conflict.filter(keyed)
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
        counts[WRONG_PARTITION] = counts.get(WRONG_PARTITION, 0) + misplaced
    return table.drop("_file")

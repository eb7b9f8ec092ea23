"""The user's pre-computed feature files: one day per path template, keyed by symbol and timestamp.

An imported run may read some or all of its inputs (and its labels) from files the user's
own pipeline writes (design.md, "Importing a run", ``[features.columns]``): under a root
(local or ``s3://``), one day per ``path`` template, ``{date}.parquet`` or
``date={date}/*.parquet``. Reading checks what the run needs of a file and nothing more:
the key columns and the named columns exist and are numbers, and each (symbol, minute)
has one row. Each problem is a ``DataError`` naming the file, the column and the fix.
Rows without a key are dropped and counted; the session filter and the grid are the
features stage's (``tthf.engine.features.files``), as for raw bars.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import io
import re
from collections.abc import Sequence

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tthf.engine.config import FeatureFiles
from tthf.engine.data.marketdata import list_dates
from tthf.engine.store import Store, open_store
from tthf.errors import DataError, KeyNotFoundError, NoDataError

_DATE = r"(?P<date>\d{4}-\d{2}-\d{2})"
_FIX_SPEC = "or fix [features.columns] (and [labels]) in the import spec and re-import"


def _pattern(template: str) -> re.Pattern[str]:
    """The template as a regex over store keys (``{date}`` a date, ``*`` any name part)."""
    parts = re.split(r"(\{date\}|\*)", template)
    body = "".join(_DATE if p == "{date}" else "[^/]*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(f"^{body}$")


def check_template(template: str) -> str:
    """``template`` when it names one ``{date}`` and ends in ``.parquet``, else the reason in a ``DataError``."""
    if template.count("{date}") != 1 or not template.endswith(".parquet") or template.startswith("/"):
        raise DataError(
            f"feature files path {template!r}: give a relative template with one {{date}} ending in .parquet, "
            'e.g. "{date}.parquet" or "date={date}/*.parquet"'
        )
    return template


def list_feature_dates(store: Store, files: FeatureFiles) -> list[dt.date]:
    """Dates with at least one file matching the template, ascending (one listing call)."""
    pattern = _pattern(check_template(files.path))
    dates = set()
    for key in store.list(_static_prefix(files.path)):
        match = pattern.match(key)
        if match:
            try:
                dates.add(dt.date.fromisoformat(match["date"]))
            except ValueError:
                continue  # not a date (2024-13-40): not one of the days
    return sorted(dates)


def input_dates(data: Store, files: FeatureFiles | None, *, computed: bool) -> list[dt.date]:
    """The dates a run has inputs for: the raw root's, the feature files', or both's when it reads both."""
    if files is None:
        return list_dates(data)
    have = list_feature_dates(open_store(files.root), files)
    return sorted(set(have) & set(list_dates(data))) if computed else have


def _static_prefix(template: str) -> str:
    """The folder of the template before anything that varies (what to list)."""
    head = re.split(r"\{date\}|\*", template)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def day_keys(store: Store, files: FeatureFiles, day: dt.date) -> list[str]:
    """The keys of ``day``'s files, in key order; ``NoDataError`` when there are none."""
    path = check_template(files.path).replace("{date}", day.isoformat())
    if "*" not in path:
        keys = [path] if store.exists(path) else []
    else:
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        keys = [k for k in store.list(folder) if fnmatch.fnmatchcase(k, path) and k.count("/") == path.count("/")]
    if not keys:
        raise NoDataError(
            f"no feature file for {day}: nothing matches {store.uri(path)}; pick a date that has one "
            "(tthf-check --run NAME lists them)"
        )
    return keys


def read_feature_day(
    store: Store, files: FeatureFiles, day: dt.date, columns: Sequence[str], *, counts: dict[str, int] | None = None
) -> pl.DataFrame:
    """``day``'s rows: ``symbol`` (str), ``ts`` (UTC, us) and ``columns`` as Float64, file by file.

    Only the named columns are decoded. Rows with a null symbol or ts are dropped
    (``counts['file_null_key']``). Two rows of one (symbol, minute), in one file or across
    the day's files, are a ``DataError``: which values the user's model saw is unknowable.
    """
    frames = []
    keys = day_keys(store, files, day)
    for key in keys:
        try:
            data = store.read_bytes(key)
        except KeyNotFoundError as exc:
            raise NoDataError(
                f"no feature file for {day}: {exc}; the feature root changed while reading, retry"
            ) from exc
        frames.append(_read_file(data, store.uri(key), files, columns).with_columns(pl.lit(key).alias("_file")))
    table = pl.concat(frames)
    keyed = table.filter(pl.col("symbol").is_not_null() & pl.col("ts").is_not_null())
    if counts is not None:
        counts["file_rows_in"] = counts.get("file_rows_in", 0) + table.height
        counts["file_null_key"] = counts.get("file_null_key", 0) + table.height - keyed.height
    _check_unique(keyed, store, files)
    return keyed.drop("_file")


def _read_file(data: bytes, source: str, files: FeatureFiles, columns: Sequence[str]) -> pl.DataFrame:
    """One file's key and named columns, checked and in canonical types."""
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{source}: not a readable feature file ({exc}); re-write or delete it") from exc
    _check_names(names, source, files, columns)
    wanted = list(dict.fromkeys([files.symbol, files.ts, *columns]))
    try:
        table = parquet.read(columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{source}: not a readable feature file ({exc}); re-write or delete it") from exc
    return conform_features(table, source, files, columns)


def conform_features(table: pa.Table, source: str, files: FeatureFiles, columns: Sequence[str]) -> pl.DataFrame:
    """Feature rows (a file's, or rows given to the real-time predictor) as ``symbol``, ``ts`` (UTC) and
    ``columns`` (Float64), checked: what every reader of feature rows returns."""
    _check_names(table.column_names, source, files, columns)
    out = [_symbol(table.column(files.symbol), source, files.symbol), _ts(table.column(files.ts), source, files)]
    for name in columns:
        out.append(_number(table.column(name), source, name))
    return pl.DataFrame(out)


def _check_names(names: list[str], source: str, files: FeatureFiles, columns: Sequence[str]) -> None:
    """The key columns and ``columns`` are all there (names are case-sensitive)."""
    shown = f"{names[:12]}{'...' if len(names) > 12 else ''}"
    for role, name in {"symbol": files.symbol, "ts": files.ts}.items():
        if name not in names:
            raise DataError(
                f"{source}: the {role} column {name!r} is missing; the file has {shown}; set [features.columns] "
                f"{role} = the file's {role} column and re-import"
            )
    absent = [c for c in columns if c not in names]
    if absent:
        raise DataError(
            f"{source}: column(s) {absent} named by the run are missing; the file has {len(names)} columns "
            f"{shown}; write them to the file {_FIX_SPEC}"
        )


def check_label_columns(store: Store, files: FeatureFiles, days: Sequence[dt.date]) -> None:
    """Each ``[labels]`` column is in every file of ``days`` and holds numbers, from the files' Parquet
    schemas (no column is decoded); a ``DataError`` names the file, the label, the column and the fix.

    ``tthf-import`` checks this so that a typo in ``[labels]`` fails at import, not at tthf-eval.
    """
    for day in days:
        for key in day_keys(store, files, day):
            try:
                schema = pq.read_schema(io.BytesIO(store.read_bytes(key)))
            except (pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"{store.uri(key)}: not a readable feature file ({exc}); re-write or delete it"
                ) from exc
            for output, column in files.labels.items():
                _check_label(schema, store.uri(key), output, column)


def _check_label(schema: pa.Schema, source: str, output: str, column: str) -> None:
    names = schema.names
    if column not in names:
        shown = f"{names[:12]}{'...' if len(names) > 12 else ''}"
        raise DataError(
            f"{source}: [labels] {output} = {column!r} is not a column of the file (it has {len(names)}: {shown}); "
            f"set [labels] {output} to the file's column of realized {output}, or write that column, and re-import"
        )
    kind = schema.field(column).type
    if not _is_number(kind):
        raise DataError(
            f"{source}: [labels] {output} = {column!r} has type {kind}, expected a number (float or integer); "
            f"write realized {output} as a number, or name a numeric column in [labels] {output}, and re-import"
        )


def _is_number(kind: pa.DataType) -> bool:
    """What a feature or label column may hold: floats, integers, or only nulls."""
    return bool(pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind))


def _symbol(array: pa.ChunkedArray, source: str, name: str) -> pl.Series:
    kind = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise DataError(f"{source}: symbol column {name!r} has type {kind}, expected a string; write symbols as text")
    return pl.Series("symbol", array.cast(pa.large_string())).cast(pl.String)


def _ts(array: pa.ChunkedArray, source: str, files: FeatureFiles) -> pl.Series:
    """Timestamps as UTC microseconds: zoned ones converted, naive ones read in ``files.timezone``."""
    if not pa.types.is_timestamp(array.type):
        raise DataError(
            f"{source}: ts column {files.ts!r} has type {array.type}, expected a timestamp; write it as a "
            "Parquet timestamp (naive ones are read in [features.columns] timezone)"
        )
    series = pl.Series("ts", array).cast(pl.Datetime("us", array.type.tz))
    if array.type.tz is None:
        try:
            series = series.dt.replace_time_zone(files.timezone, ambiguous="earliest", non_existent="null")
        except pl.exceptions.ComputeError as exc:
            raise DataError(f"{source}: timezone {files.timezone!r} is not a time zone ({exc}); fix the spec") from exc
    return series.dt.convert_time_zone("UTC")


def _number(array: pa.ChunkedArray, source: str, name: str) -> pl.Series:
    kind = array.type
    if not _is_number(kind):
        raise DataError(
            f"{source}: column {name!r} has type {kind}, expected a number (float or integer); "
            "write it as a number, or drop it from features.names / [labels]"
        )
    return pl.Series(name, array).cast(pl.Float64)


def _check_unique(table: pl.DataFrame, store: Store, files: FeatureFiles) -> None:
    """One row per (symbol, minute): the grid's key (``ts`` is truncated to its minute)."""
    minute = pl.col("ts").dt.truncate("1m")
    dup = table.filter(pl.struct("symbol", minute).is_duplicated())
    if dup.is_empty():
        return
    symbol, ts = dup.select("symbol", minute.alias("m")).row(0)
    same = dup.filter((pl.col("symbol") == symbol) & (minute == ts))
    where = ", ".join(sorted({store.uri(f) for f in same["_file"].to_list()}))
    raise DataError(
        f"{where}: {dup.height} rows share a (symbol, minute), e.g. {files.symbol}={symbol!r} {files.ts} in minute "
        f"{ts.isoformat()}; write one row per symbol and minute"
    )

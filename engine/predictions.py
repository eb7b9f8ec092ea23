"""Turn model outputs at window positions into the per-date predictions table.

Dense mode predicts every valid window; sparse mode predicts every ``stride``-th minute
and forward-fills. Both produce one row per (symbol, minute) whose dense window is
valid (README.md, "Data and outputs"); a sparse row takes the prediction of the last
*scheduled* sample at or before its minute, ``source_ts``. If that scheduled window
is not valid (the symbol was halted or had no quotes inside it), the minutes it would
have filled get no row rather than an older, staler forecast: a fill never spans more
than ``stride - 1`` minutes. So sparse rows are a subset of dense rows and equal them at
sampled minutes.
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl

from tthf.engine.config import OUTPUT_NAMES

COLUMNS = ("ts", "symbol", *OUTPUT_NAMES, "source_ts")
SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "symbol": pl.String(),
    **dict.fromkeys(OUTPUT_NAMES, pl.Float32()),
    "source_ts": pl.Datetime("us", "UTC"),
}
FORMATS = ("csv", "parquet")


def empty() -> pl.DataFrame:
    """A predictions table without rows."""
    return pl.DataFrame(schema=SCHEMA)


def final_outputs(received: pl.DataFrame) -> pl.DataFrame:
    """The day's outputs from every reply row received in order: each (ts, symbol)'s last version,
    withdrawn rows (null outputs) dropped -- what ``realtime.apply_update`` keeps, in one pass
    (a client's received replies, a restart's outputs file: engine/runtime/outputlog.py)."""
    if received.height == 0:
        return empty()
    last = received.select(COLUMNS).unique(["ts", "symbol"], keep="last", maintain_order=True)
    return last.filter(pl.col(OUTPUT_NAMES[0]).is_not_null()).sort("ts", "symbol")


def table(ts: np.ndarray, symbols: pl.Series, outputs: dict[str, np.ndarray], source_ts: np.ndarray) -> pl.DataFrame:
    """The predictions table from row-aligned arrays: minutes (datetime64[us], UTC), symbols, outputs, sources."""
    columns = {
        "ts": pl.Series("ts", ts).dt.replace_time_zone("UTC"),
        "symbol": symbols.alias("symbol"),
        **{name: pl.Series(name, np.asarray(outputs[name], dtype=np.float32)) for name in OUTPUT_NAMES},
        "source_ts": pl.Series("source_ts", source_ts).dt.replace_time_zone("UTC"),
    }
    return pl.DataFrame(columns).select(COLUMNS)


def scheduled_minute(minutes: np.ndarray, seq_len: int, stride: int) -> np.ndarray:
    """The sampled minute at or before each minute index (windows start at ``seq_len - 1``)."""
    return minutes - (minutes - (seq_len - 1)) % stride


def assemble(
    symbols: list[str],
    minutes: np.ndarray,
    dense_pos: tuple[np.ndarray, np.ndarray],
    sampled_pos: tuple[np.ndarray, np.ndarray],
    outputs: dict[str, np.ndarray],
    *,
    seq_len: int,
    stride: int,
) -> pl.DataFrame:
    """Rows for every dense position whose scheduled sample was predicted, sorted by (ts, symbol).

    ``dense_pos`` / ``sampled_pos`` are (symbol index, minute index) arrays of the valid
    windows at stride 1 and at ``stride``; ``outputs`` holds one value per sampled window.
    """
    n_sym, n_min = len(symbols), len(minutes)
    lookup = np.full((n_sym, n_min), -1, dtype=np.int64)
    lookup[sampled_pos[0], sampled_pos[1]] = np.arange(len(sampled_pos[0]))
    sym, minute = dense_pos
    source = scheduled_minute(minute.astype(np.int64), seq_len, stride)
    row = lookup[sym, source]
    keep = row >= 0
    sym, minute, source, row = sym[keep], minute[keep], source[keep], row[keep]
    order = np.lexsort((sym, minute))
    sym, minute, source, row = sym[order], minute[order], source[order], row[order]
    names = pl.Series("symbol", symbols, dtype=pl.String).gather(sym)
    return table(
        minutes[minute],
        names,
        {n: np.asarray(outputs[n], dtype=np.float32)[row] for n in OUTPUT_NAMES},
        minutes[source],
    )


def encode(frame: pl.DataFrame, fmt: str) -> bytes:
    """Serialize a predictions table; byte-identical for identical tables (reruns compare equal)."""
    buf = io.BytesIO()
    if fmt == "csv":
        frame.write_csv(buf, datetime_format="%Y-%m-%dT%H:%M:%SZ")
    elif fmt == "parquet":
        frame.write_parquet(buf, compression="zstd", statistics=False)
    else:
        raise ValueError(f"unknown predictions format {fmt!r}; use one of {FORMATS}")
    return buf.getvalue()


def decode(data: bytes, fmt: str) -> pl.DataFrame:
    """Read a predictions file back with the types ``assemble`` produced."""
    if fmt == "parquet":
        return pl.read_parquet(io.BytesIO(data))
    frame = pl.read_csv(io.BytesIO(data), schema_overrides={n: pl.Float32 for n in OUTPUT_NAMES})
    return frame.with_columns(
        pl.col("ts", "source_ts").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_unit="us", time_zone="UTC")
    )

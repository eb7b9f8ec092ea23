"""File columns on the session grid: the user's feature rows in their (symbol, minute) cells, filled.

The grid is tthf's: every regular-session minute of the day for every symbol, so windows
count session minutes whatever the source (design.md: a window ending at ``t`` holds
``t-seq_len+1 .. t``). A symbol's day starts at its first row; after it, a minute with no
row is a missing value, like a null in a row;
``fill`` then fills per symbol along the day, before scaling: ``ffill_then_zero`` carries
the last value forward and puts 0 where nothing came before, ``zero`` puts 0, ``none``
leaves it missing and masks the minute (no window holds it). Rows outside the session are
dropped and counted, as for raw bars.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from tthf.engine.config import DEFAULT_CALENDAR, FILLS
from tthf.engine.data.calendar import session_minutes
from tthf.engine.features.clean import Session
from tthf.engine.features.scalers import Scalers


@dataclass
class FileGrid:
    """``values``: (S, M, F) float64, NaN where missing (before the fill); ``present``: (S, M) a row was there."""

    symbols: list[str]
    minutes: np.ndarray
    values: np.ndarray
    present: np.ndarray
    counts: dict[str, int]


def file_grid(
    rows: pl.DataFrame,
    day: dt.date,
    names: Sequence[str],
    *,
    symbols: Sequence[str] | None = None,
    calendar: str = DEFAULT_CALENDAR,
) -> FileGrid:
    """``names`` of ``rows`` (``read_feature_day``'s frame) in their session cells; nothing is filled yet.

    ``symbols`` fixes the grid's symbols and order (another source's: their rows only, the
    others dropped and counted); by default every symbol with a row in the session, sorted.
    """
    session = Session.of(day, calendar)
    n = session.n_minutes
    offset = ((pl.col("ts").dt.epoch("us") - session.start_us) // 60_000_000).alias("_tid")
    rows = rows.with_columns(offset)
    inside = rows.filter((pl.col("_tid") >= 0) & (pl.col("_tid") < n))
    names_s = sorted(inside["symbol"].unique().to_list()) if symbols is None else list(symbols)
    sid_of = {s: i for i, s in enumerate(names_s)}
    listed = inside.filter(pl.col("symbol").is_in(names_s))
    sid = np.array([sid_of[s] for s in listed["symbol"].to_list()], dtype=np.int64)
    tid = listed["_tid"].to_numpy().astype(np.int64)
    values = np.full((len(names_s), n, len(names)), np.nan)
    values[sid, tid] = listed.select(pl.col(list(names)).fill_null(np.nan)).to_numpy() if names else 0.0
    present = np.zeros((len(names_s), n), dtype=np.bool_)
    present[sid, tid] = True
    counts = {
        "file_outside_session": rows.height - inside.height,
        "file_unlisted_symbol": inside.height - listed.height,
        "file_rows_used": listed.height,
        "file_missing_minutes": int(present.size - present.sum()),
        "file_null_values": int(np.isnan(values[present]).sum()),
    }
    return FileGrid(names_s, session_minutes(day, calendar), values, present, counts)


def fill(values: np.ndarray, rule: str, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``values`` filled by ``rule`` per symbol along the day, as float32; the (S, M) mask of usable minutes).

    A symbol's day starts at its first row (``present``): the minutes before it are masked,
    as nothing was known of the symbol yet (real time cannot predict a symbol before its
    first row, so batch does not either). From there ``ffill_then_zero`` and ``zero`` leave
    nothing missing; ``none`` masks each minute with a missing value (its NaNs stay, and no
    window holds them).
    """
    if rule not in FILLS:
        raise ValueError(f"fill {rule!r}; use one of {FILLS}")
    out = values.copy()
    started = np.logical_or.accumulate(present, axis=1) if present.size else present.copy()
    if rule == "ffill_then_zero" and out.size:
        m = out.shape[1]
        last = np.where(np.isnan(out), 0, np.arange(m)[None, :, None])
        np.maximum.accumulate(last, axis=1, out=last)
        out = np.take_along_axis(out, last, axis=1)
    missing = np.isnan(out)
    if rule == "none":
        return out.astype(np.float32), started & ~missing.any(axis=2)
    out[missing] = 0.0
    return out.astype(np.float32), started


def scaled_files(grid: FileGrid, rule: str, scalers: Scalers, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the grid's columns filled by ``rule`` and scaled, (S, M, F) float32; the mask): what batch and real time feed.

    Scaling is ``Scalers.transform``'s float32 operations; under ``none`` the masked minutes'
    NaNs become 0 (no window holds them).
    """
    values, mask = fill(grid.values, rule, grid.present)
    scaled = scalers.subset(names).transform(values, names, names)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    return scaled, mask


def in_model_order(feature_names: Sequence[str], *parts: tuple[Sequence[str], np.ndarray]) -> np.ndarray:
    """(S, M, F) float32: each part's columns (``(names, (S, M, k) array)``) at their place in the run's order."""
    first = parts[0][1]
    out = np.empty((*first.shape[:2], len(feature_names)), dtype=np.float32)
    at = {n: i for i, n in enumerate(feature_names)}
    for names, values in parts:
        out[..., [at[n] for n in names]] = values
    return out

"""One date's forecasts next to what happened and the baselines, on the time-major ``(M, S)`` grid.

A predictions file has one row per (symbol, minute); sparse files repeat each forecast
on the minutes it was forward-filled to. A forecast is what its window said at
``source_ts``, so it is scored once, against the realized targets of ``source_ts``:
rows are reduced to one per ``(symbol, source_ts)`` and placed at that minute. Dense rows
have ``source_ts == ts`` and are all kept. Every cell without a forecast is NaN in every
grid, so the model and the baselines are always scored on the same cells.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.evaluation import baselines
from tthf.engine.evaluation.realized import RealizedDay

_MINUTE_US = 60_000_000
#: the grids of a panel besides the four forecasts
TARGETS = ("y_ret", "y_vol")
BASELINES = ("reversal", "last_rv", "ewma_rv", "same_minute")


@dataclass
class DatePanel:
    """``grids[name]``: ``(M, S)`` float32 with NaN where no forecast; ``has``: the forecast cells."""

    date: dt.date
    minutes: np.ndarray
    symbols: list[str]
    grids: dict[str, np.ndarray]
    has: np.ndarray
    rows: int  # rows in the predictions file
    forecasts: int  # distinct (symbol, source_ts), i.e. windows that were scored
    unmatched: int  # forecasts whose symbol or minute is not on the day's grid
    step: int  # smallest spacing in minutes between a symbol's forecasts (1 when dense)
    absent: dict[str, str] = field(default_factory=dict)  # baselines the realized day cannot give, and why

    @property
    def sparse(self) -> bool:
        return self.rows > self.forecasts

    def flat(self, name: str) -> np.ndarray:
        """The values of grid ``name`` at the forecast cells, in (minute, symbol) order."""
        return self.grids[name][self.has]


def _step(minute: np.ndarray, sid: np.ndarray) -> int:
    """The smallest gap between consecutive forecast minutes of one symbol (1 for dense files)."""
    if len(minute) < 2:
        return 1
    order = np.lexsort((minute, sid))
    gaps = np.diff(minute[order])[np.diff(sid[order]) == 0]
    gaps = gaps[gaps > 0]
    return int(gaps.min()) if len(gaps) else 1


def build_panel(frame: pl.DataFrame, real: RealizedDay, history: Sequence[tuple[list[str], np.ndarray]]) -> DatePanel:
    """Join a date's predictions table to its realized targets; ``history`` feeds the same-minute baseline."""
    n_sym, n_min = len(real.symbols), len(real.minutes)
    start_us = int(real.minutes[0].astype("datetime64[us]").astype(np.int64))
    forecasts = frame.unique(subset=["symbol", "source_ts"], keep="first", maintain_order=True)
    keys = forecasts.select(
        pl.col("symbol")
        .replace_strict(real.symbols, list(range(n_sym)), default=-1, return_dtype=pl.Int64)
        .alias("sid"),
        ((pl.col("source_ts").dt.epoch("us") - start_us) // _MINUTE_US).alias("minute"),
    )
    sid, minute = keys.get_column("sid").to_numpy(), keys.get_column("minute").to_numpy()
    on_grid = (sid >= 0) & (minute >= 0) & (minute < n_min)
    sid, minute = sid[on_grid], minute[on_grid]
    has = np.zeros((n_min, n_sym), dtype=bool)
    has[minute, sid] = True

    def cells(values: np.ndarray) -> np.ndarray:
        return np.where(has, values, np.nan).astype(np.float32)

    grids = {}
    for name in OUTPUT_NAMES:
        grid = np.full((n_min, n_sym), np.nan, dtype=np.float32)
        grid[minute, sid] = forecasts.get_column(name).to_numpy()[on_grid]
        grids[name] = grid
    grids["y_ret"], grids["y_vol"] = cells(real.labels[:, :, 0].T), cells(real.vol.T)
    last = baselines.last_rv(real.vol)
    grids["reversal"] = cells(baselines.reversal(real.ret_30).T)
    grids["last_rv"] = cells(last.T)
    grids["ewma_rv"] = cells(baselines.ewma_rv(last).T)
    grids["same_minute"] = cells(baselines.same_minute(history, real.symbols, n_min).T)
    return DatePanel(
        real.date,
        real.minutes,
        real.symbols,
        grids,
        has,
        rows=frame.height,
        forecasts=forecasts.height,
        unmatched=int((~on_grid).sum()),
        step=_step(minute, sid),
        absent=dict(real.absent),
    )

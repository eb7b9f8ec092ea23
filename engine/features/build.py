"""``build_day``: a day's raw bars -> its ``DayFeatures`` (features, mask, labels, cleaning counts).

The same code builds the training days and the inference days, so features cannot drift
between the two; the real-time predictor runs the same cleaning, grid and formulas
minute by minute (``DayGrid.add`` + ``compute_grid``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from tthf.engine.data.calendar import DEFAULT_CALENDAR
from tthf.engine.features.clean import clean_rows
from tthf.engine.features.day import DayFeatures
from tthf.engine.features.formulas import FEATURE_NAMES, compute_grid
from tthf.engine.features.grid import DayGrid
from tthf.engine.features.scalers import Scalers

#: symbols per thread below which build_day stays on one thread
_MIN_BLOCK = 128


def _compute_in_threads(g: dict[str, np.ndarray], n_minutes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``compute_grid`` on blocks of symbols in parallel threads (numpy releases the GIL in its loops).

    Symbols never mix in any computation, so the blocks give the bits of one call.
    """
    n_sym = g["bid"].shape[1]
    n_blocks = max(1, min(len(os.sched_getaffinity(0)), n_sym // _MIN_BLOCK))
    edges = np.linspace(0, n_sym, n_blocks + 1).astype(int)
    features = np.empty((n_sym, n_minutes, len(FEATURE_NAMES)), dtype=np.float32)

    def block(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        part = g if n_blocks == 1 else {name: np.ascontiguousarray(column[:, a:b]) for name, column in g.items()}
        _, mask, labels = compute_grid(part, n_minutes, out=features[a:b])
        assert labels is not None
        return mask, labels

    if n_blocks == 1:
        mask, labels = block(0, n_sym)
        return features, mask, labels
    with ThreadPoolExecutor(n_blocks) as pool:
        parts = list(pool.map(block, edges[:-1], edges[1:]))
    return features, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def build_day(
    raw: pl.DataFrame,
    day: dt.date,
    *,
    symbols: list[str] | None = None,
    source: str = "",
    calendar: str = DEFAULT_CALENDAR,
) -> DayFeatures:
    """Features, mask and labels of ``day`` from its raw rows (any order, any extra rows).

    ``symbols`` fixes the grid's symbols and their order (absent ones are all-missing,
    rows of unlisted ones are dropped and counted); by default every symbol with a row in
    the regular session, sorted. ``source`` names the data in error messages; ``calendar``
    (an exchange's ISO MIC code, the run's) gives the day's regular session.
    """
    source = source or f"raw data of {day}"
    clean = clean_rows(raw, day, symbols, source, calendar=calendar)
    grid = DayGrid.from_clean(day, clean, calendar)
    features, mask, labels = _compute_in_threads(grid.columns, clean.n_minutes)
    counts = clean.counts
    counts["missing_minutes"] = len(grid.symbols) * clean.n_minutes - counts["rows_used"]
    counts["masked_out"] = int(mask.size - mask.sum())
    return DayFeatures(
        date=day,
        symbols=grid.symbols,
        minutes=grid.minutes,
        feature_names=list(FEATURE_NAMES),
        features=features,
        mask=mask,
        labels=labels,
        counts=counts,
    )


def build_scaled_day(
    raw: pl.DataFrame,
    day: dt.date,
    scalers: Scalers,
    feature_names: Sequence[str],
    *,
    source: str = "",
    calendar: str = DEFAULT_CALENDAR,
) -> tuple[DayFeatures, np.ndarray]:
    """``build_day`` and its features scaled in the run's order: what inference and validation feed the model."""
    feats = build_day(raw, day, source=source, calendar=calendar)
    return feats, scalers.transform_day(feats, feature_names)

"""``build_day``: a day's raw bars -> its ``DayFeatures`` (features, mask, labels, cleaning counts).

The same code builds the training days and the inference days, so features cannot drift
between the two; the real-time predictor runs the same cleaning, grid and formulas
minute by minute (``DayGrid.add`` + ``compute_grid``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl

from tthf.engine.data.calendar import DEFAULT_CALENDAR
from tthf.engine.features.clean import clean_rows
from tthf.engine.features.day import DayFeatures
from tthf.engine.features.formulas import FEATURE_NAMES, compute_grid
from tthf.engine.features.grid import DayGrid
from tthf.engine.features.scalers import Scalers


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
    features, mask, labels = compute_grid(grid.columns, clean.n_minutes)
    assert labels is not None
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

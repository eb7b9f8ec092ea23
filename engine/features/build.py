"""``build_day``: a day's raw bars -> its ``DayFeatures`` (features, mask, labels, cleaning counts).

The same code builds the training days and the inference days, so features cannot drift
between the two: ``build_scaled_day`` (inference) runs the same cleaning, grid and kernel
and only asks the kernel to write the scaled inputs directly (same bits as scaling the
unscaled grid) and skips the labels; the real-time predictor runs the same cleaning, grid
and formulas minute by minute (``DayGrid.add`` + ``compute_grid``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from tthf.engine.data.calendar import DEFAULT_CALENDAR
from tthf.engine.features.clean import CleanRows, clean_rows, end_stamp_warning
from tthf.engine.features.day import DayFeatures, ScaledDayFeatures
from tthf.engine.features.files import file_grid, in_model_order, scaled_files
from tthf.engine.features.formulas import FEATURE_NAMES, compute_grid
from tthf.engine.features.grid import DayGrid
from tthf.engine.features.scalers import Scalers

log = logging.getLogger("tthf.features")


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
    clean, grid = _grid(raw, day, symbols, source, calendar)
    features, mask, labels = compute_grid(grid.columns, clean.n_minutes)
    assert labels is not None
    return DayFeatures(
        date=day,
        symbols=grid.symbols,
        minutes=grid.minutes,
        feature_names=list(FEATURE_NAMES),
        features=features,
        mask=mask,
        labels=labels,
        counts=_counts(clean, grid, mask),
    )


def build_scaled_day(
    raw: pl.DataFrame | None,
    day: dt.date,
    scalers: Scalers,
    feature_names: Sequence[str],
    *,
    files: FileInputs | None = None,
    source: str = "",
    calendar: str = DEFAULT_CALENDAR,
) -> ScaledDayFeatures:
    """The day's model inputs: ``build_day``'s features scaled in the run's order (``feature_names``), no labels.

    Bit for bit ``scalers.transform_day(build_day(...), feature_names)``: the kernel applies
    the scaling as it writes (``Scalers.kernel_scale``), so the unscaled grid is never made.
    With ``files``, its names come from the user's feature rows instead (``scaled_with_files``).
    """
    if files is not None:
        return scaled_with_files(raw, day, scalers, feature_names, files, source=source, calendar=calendar)
    assert raw is not None, "a day without feature files is built from its raw bars"
    clean, grid = _grid(raw, day, None, source, calendar)
    scale = scalers.kernel_scale(FEATURE_NAMES, feature_names, what=f"features of {day}")
    scaled, mask, _ = compute_grid(grid.columns, clean.n_minutes, labels=False, scale=scale)
    return ScaledDayFeatures(
        date=day,
        symbols=grid.symbols,
        minutes=grid.minutes,
        feature_names=list(feature_names),
        scaled=scaled,
        mask=mask,
        counts=_counts(clean, grid, mask),
    )


@dataclass
class FileInputs:
    """A day's feature-file rows (``read_feature_day``), the run's names they hold, and their fill rule."""

    rows: pl.DataFrame
    names: list[str]
    fill: str


def scaled_with_files(
    raw: pl.DataFrame | None,
    day: dt.date,
    scalers: Scalers,
    feature_names: Sequence[str],
    files: FileInputs,
    *,
    source: str = "",
    calendar: str = DEFAULT_CALENDAR,
) -> ScaledDayFeatures:
    """The model inputs of a run that reads ``files.names`` from feature files and computes the rest from ``raw``.

    Both sources land on one (symbol, minute) session grid before scaling: the computed
    names from the kernel (its own missing-value rules, its mask; the raw bars' symbols),
    the file names filled by ``files.fill`` and scaled with ``Scalers.transform``'s float32
    operations; a minute is usable when both sources' masks say so.
    """
    computed = [n for n in feature_names if n not in files.names]
    counts: dict[str, int] = {}
    symbols: list[str] | None = None
    if computed:
        assert raw is not None, "computed features need the day's raw bars"
        clean, grid = _grid(raw, day, None, source, calendar)
        scale = scalers.subset(computed).kernel_scale(FEATURE_NAMES, computed, what=f"features of {day}")
        part, mask, _ = compute_grid(grid.columns, clean.n_minutes, labels=False, scale=scale)
        symbols, counts = grid.symbols, _counts(clean, grid, mask)
    fgrid = file_grid(files.rows, day, files.names, symbols=symbols, calendar=calendar)
    from_files, file_mask = scaled_files(fgrid, files.fill, scalers, files.names)
    parts = [(files.names, from_files)]
    if computed:
        parts.append((computed, part))
        file_mask &= mask
    scaled = in_model_order(feature_names, *parts)
    return ScaledDayFeatures(
        date=day,
        symbols=fgrid.symbols,
        minutes=fgrid.minutes,
        feature_names=list(feature_names),
        scaled=scaled,
        mask=file_mask,
        counts=counts | fgrid.counts,
    )


def _grid(
    raw: pl.DataFrame, day: dt.date, symbols: list[str] | None, source: str, calendar: str
) -> tuple[CleanRows, DayGrid]:
    source = source or f"raw data of {day}"
    clean = clean_rows(raw, day, symbols, source, calendar=calendar)
    warning = end_stamp_warning(raw, day, source, calendar)
    if warning:  # training, tthf-run and tthf-check all see it; the day is still built as stamped
        log.warning(warning)
    return clean, DayGrid.from_clean(day, clean, calendar)


def _counts(clean: CleanRows, grid: DayGrid, mask: np.ndarray) -> dict[str, int]:
    counts = clean.counts
    counts["missing_minutes"] = len(grid.symbols) * clean.n_minutes - counts["rows_used"]
    counts["masked_out"] = int(mask.size - mask.sum())
    return counts

"""Stage 2, features: raw minutely BBO bars of one day -> the dense feature grid, mask and labels.

The pipeline, one module each: ``clean`` (polars: session filter, rules, counts,
duplicates) -> ``grid`` (the (minutes, symbols) grid, whole or minute by minute) ->
``files`` (the user's feature-file columns on the same grid, filled) ->
``state`` (resumable day statistics) -> ``formulas``
(the 59 features as data, ``compute_grid`` on the C++ kernel) and ``labels`` -> ``build`` (``build_day``,
``DayFeatures`` in ``day``); ``scalers`` are fitted on training days and applied by name.
docs/features.md is the reference for every definition.
"""

from tthf.engine.features.build import FileInputs, build_day, build_scaled_day
from tthf.engine.features.clean import COUNT_KEYS, CleanRows, clean_rows, end_stamp_warning
from tthf.engine.features.day import DayFeatures, ScaledDayFeatures
from tthf.engine.features.formulas import (
    FEATURE_GROUPS,
    FEATURE_NAMES,
    FEATURES,
    MAX_QUOTE_AGE,
    NEUTRAL,
    Feature,
    compute_grid,
    neutral,
)
from tthf.engine.features.grid import GRID_COLUMNS, DayGrid, grid_arrays
from tthf.engine.features.scalers import Scalers
from tthf.engine.features.state import DayState

__all__ = [
    "COUNT_KEYS",
    "FEATURES",
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "GRID_COLUMNS",
    "MAX_QUOTE_AGE",
    "NEUTRAL",
    "CleanRows",
    "DayFeatures",
    "DayGrid",
    "DayState",
    "Feature",
    "FileInputs",
    "ScaledDayFeatures",
    "Scalers",
    "build_day",
    "build_scaled_day",
    "clean_rows",
    "compute_grid",
    "end_stamp_warning",
    "grid_arrays",
    "neutral",
]

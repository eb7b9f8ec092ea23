"""What happened on a date: the realized targets, computed by the label code that training uses.

``build_day(read_day(root, day), day)`` is the one definition of ``ret_1h`` and
``vol_10m`` (docs/features.md, "Labels"); this module keeps only the slices of its
result that scoring needs, so that a month of 1000 symbols stays small in memory: the
labels, the ``ret_30`` feature for the reversal baseline and the cleaning counts. An
imported run whose spec names ``[labels]`` reads them from its feature files instead
(``realized_from_files``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from tthf.engine.config import DEFAULT_CALENDAR, FeatureFiles
from tthf.engine.data.featurefiles import read_feature_day
from tthf.engine.data.marketdata import partition, read_day
from tthf.engine.evaluation.baselines import REVERSAL_FEATURE
from tthf.engine.features import build_day
from tthf.engine.features.files import file_grid
from tthf.engine.store import Store


@dataclass
class RealizedDay:
    """One date on its ``(S, M)`` grid: ``labels`` (S, M, 2) float32 ``[ret_1h, vol_10m]``, NaN where unavailable."""

    date: dt.date
    symbols: list[str]
    minutes: np.ndarray  # (M,) datetime64[us], UTC minute starts
    labels: np.ndarray
    ret_30: np.ndarray  # (S, M) float32
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def vol(self) -> np.ndarray:
        return self.labels[:, :, 1]


def realized_day(root: Store, day: dt.date, calendar: str = DEFAULT_CALENDAR) -> RealizedDay:
    """Read the raw bars of ``day`` and compute its labels exactly as training does (on the run's calendar)."""
    counts: dict[str, int] = {}
    feats = build_day(
        read_day(root, day, counts=counts, calendar=calendar), day, source=root.uri(partition(day)), calendar=calendar
    )
    ret_30 = np.ascontiguousarray(feats.features[:, :, feats.feature_names.index(REVERSAL_FEATURE)])
    return RealizedDay(day, list(feats.symbols), feats.minutes, feats.labels, ret_30, {**counts, **feats.counts})


def realized_from_files(
    files: FeatureFiles, store: Store, day: dt.date, calendar: str = DEFAULT_CALENDAR
) -> RealizedDay:
    """The realized values an imported run's feature files carry (``[labels]``), read at the forecast minute.

    They are in output units and used as they are (nulls are unavailable labels); an output
    without a label column has none. The files carry no ``ret_30``: the reversal baseline
    reads 0 (the zero baseline) and the counts say so.
    """
    counts: dict[str, int] = {}
    columns = list(dict.fromkeys(files.labels.values()))
    grid = file_grid(read_feature_day(store, files, day, columns, counts=counts), day, columns, calendar=calendar)
    labels = np.full((len(grid.symbols), len(grid.minutes), 2), np.nan, dtype=np.float32)
    for k, name in enumerate(("ret_1h", "vol_10m")):
        if name in files.labels:
            labels[..., k] = grid.values[..., columns.index(files.labels[name])]
    ret_30 = np.zeros(labels.shape[:2], dtype=np.float32)
    counts |= grid.counts | {"reversal_baseline_unavailable": 1}
    return RealizedDay(day, grid.symbols, grid.minutes.astype("datetime64[us]"), labels, ret_30, counts)

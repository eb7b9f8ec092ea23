"""What happened on a date: the realized targets, computed by the label code that training uses.

``build_day(read_day(root, day), day)`` is the one definition of ``ret_1h`` and
``vol_10m`` (docs/features.md, "Labels"); this module keeps only the slices of its
result that scoring needs, so that a month of 1000 symbols stays small in memory: the
labels, the ``ret_30`` feature for the reversal baseline and the cleaning counts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from tthf.engine.config import DEFAULT_CALENDAR
from tthf.engine.data.marketdata import partition, read_day
from tthf.engine.evaluation.baselines import REVERSAL_FEATURE
from tthf.engine.features import build_day
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

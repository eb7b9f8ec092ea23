"""What happened on a date: the realized targets, computed by the label code that training uses.

``build_day(read_day(root, day), day)`` is the one definition of ``ret_1h`` and
``vol_10m`` (docs/features.md, "Labels"); this module keeps only the slices of its
result that scoring needs, so that a month of 1000 symbols stays small in memory: the
labels, the ``ret_30`` feature for the reversal baseline and the cleaning counts. An
imported run whose spec names ``[labels]`` reads them from its feature files instead
(``realized_from_files``); ``label_source`` and ``realized`` pick the source for a run, so
tthf-eval, the explanations and export's forecast-quality judgement read the same values.
A baseline that a source cannot give is ``absent`` with the reason, never a number.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tthf.engine.config import DEFAULT_CALENDAR, FeatureFiles, RunConfig
from tthf.engine.data.featurefiles import read_feature_day
from tthf.engine.data.marketdata import partition, read_day
from tthf.engine.evaluation.baselines import REVERSAL_FEATURE
from tthf.engine.features import build_day
from tthf.engine.features.files import file_grid
from tthf.engine.store import Store, open_store

#: why the reversal baseline is absent when the labels come from feature files
NO_RET_30 = (
    "the run's labels come from its feature files ([labels]), which carry no ret_30 (tthf computes it from raw "
    "bars): the reversal baseline cannot be computed"
)
#: why the volatility baselines are absent when the feature files give no vol_10m label
NO_VOL_LABEL = "[labels] names no vol_10m column: the volatility baselines (built from the vol_10m labels) are absent"


@dataclass
class RealizedDay:
    """One date on its ``(S, M)`` grid: ``labels`` (S, M, 2) float32 ``[ret_1h, vol_10m]``, NaN where unavailable."""

    date: dt.date
    symbols: list[str]
    minutes: np.ndarray  # (M,) datetime64[us], UTC minute starts
    labels: np.ndarray
    ret_30: np.ndarray  # (S, M) float32, NaN everywhere when absent
    counts: dict[str, int] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)  # baseline (metrics.json key) -> why it cannot be computed

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
    files: FeatureFiles,
    store: Store,
    day: dt.date,
    calendar: str = DEFAULT_CALENDAR,
    *,
    symbols: Sequence[str] | None = None,
) -> RealizedDay:
    """The realized values an imported run's feature files carry (``[labels]``), read at the forecast minute.

    They are in output units and used as they are (nulls are unavailable labels); an output
    without a label column has none. ``symbols`` fixes the grid's symbols (the run's input
    grid's), as ``file_grid`` does. The files carry no ``ret_30``: the reversal baseline is
    absent (NaN, with the reason), and so are the volatility baselines without a vol_10m column.
    """
    counts: dict[str, int] = {}
    columns = list(dict.fromkeys(files.labels.values()))
    rows = read_feature_day(store, files, day, columns, counts=counts)
    grid = file_grid(rows, day, columns, symbols=symbols, calendar=calendar)
    labels = np.full((len(grid.symbols), len(grid.minutes), 2), np.nan, dtype=np.float32)
    for k, name in enumerate(("ret_1h", "vol_10m")):
        if name in files.labels:
            labels[..., k] = grid.values[..., columns.index(files.labels[name])]
    ret_30 = np.full(labels.shape[:2], np.nan, dtype=np.float32)
    absent = {"baseline_reversal": NO_RET_30}
    if "vol_10m" not in files.labels:
        absent |= dict.fromkeys(("baseline_last_rv", "baseline_ewma_rv", "baseline_same_minute"), NO_VOL_LABEL)
    minutes = grid.minutes.astype("datetime64[us]")
    return RealizedDay(day, grid.symbols, minutes, labels, ret_30, counts | grid.counts, absent)


def label_source(cfg: RunConfig, data: Store) -> tuple[Store, FeatureFiles | None]:
    """Where a run's realized values come from: its feature root and files when it has ``[labels]``
    (opened with ``data``'s S3 endpoint), else the raw bars under ``data`` (and no files)."""
    files = cfg.feature_files
    if files is None or not files.labels:
        return data, None
    return open_store(files.root, endpoint_url=data.locator().endpoint_url), files


def realized(
    store: Store,
    day: dt.date,
    calendar: str,
    files: FeatureFiles | None,
    *,
    symbols: Sequence[str] | None = None,
) -> RealizedDay:
    """``day``'s realized values from ``label_source``'s answer: the files' ``[labels]`` (on ``symbols``
    when given), else training's labels from the raw bars."""
    if files is not None:
        return realized_from_files(files, store, day, calendar, symbols=symbols)
    return realized_day(store, day, calendar)

"""The in-memory contract between features, windows, the model and the writers.

One trading day of one data root becomes a ``DayFeatures``: a dense grid of every
regular-session minute for every symbol, so windows are plain slices and the C++
kernel can cut them without looking anything up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np


@dataclass
class DayFeatures:
    """Features, validity and labels of one day on the (symbol, minute) grid.

    - ``features``: ``(S, M, F)`` float32, C-contiguous, unscaled, finite everywhere
      (the missing-value policy in docs/features.md has already been applied);
    - ``mask``: ``(S, M)`` bool, True where the minute has usable data;
    - ``labels``: ``(S, M, 2)`` float32 ``[ret_1h, vol_10m]``, NaN where unavailable
      (horizon past the close, or no usable data at either end);
    - ``minutes``: ``(M,)`` datetime64[us], UTC minute starts of the regular session;
    - ``counts``: how many rows each cleaning rule touched (for run manifests).
    """

    date: dt.date
    symbols: list[str]
    minutes: np.ndarray
    feature_names: list[str]
    features: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s, m, f = len(self.symbols), len(self.minutes), len(self.feature_names)
        if self.features.shape != (s, m, f) or self.features.dtype != np.float32:
            raise ValueError(f"features must be float32 {(s, m, f)}, got {self.features.dtype} {self.features.shape}")
        if self.mask.shape != (s, m) or self.mask.dtype != np.bool_:
            raise ValueError(f"mask must be bool {(s, m)}, got {self.mask.dtype} {self.mask.shape}")
        if self.labels.shape != (s, m, 2):
            raise ValueError(f"labels must be {(s, m, 2)}, got {self.labels.shape}")


@dataclass
class ScaledDayFeatures:
    """What inference needs of a day: the model's inputs on the (symbol, minute) grid, no labels.

    - ``scaled``: ``(S, M, F)`` float32, C-contiguous, the run's scaled features in the
      run's order (``feature_names``), as ``Scalers.transform`` makes them;
    - ``mask``, ``minutes``, ``counts``: as in ``DayFeatures``.
    """

    date: dt.date
    symbols: list[str]
    minutes: np.ndarray
    feature_names: list[str]
    scaled: np.ndarray
    mask: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s, m, f = len(self.symbols), len(self.minutes), len(self.feature_names)
        if self.scaled.shape != (s, m, f) or self.scaled.dtype != np.float32:
            raise ValueError(f"scaled must be float32 {(s, m, f)}, got {self.scaled.dtype} {self.scaled.shape}")
        if self.mask.shape != (s, m) or self.mask.dtype != np.bool_:
            raise ValueError(f"mask must be bool {(s, m)}, got {self.mask.dtype} {self.mask.shape}")

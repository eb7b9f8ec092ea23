"""The 59 features as data, and ``compute_grid``: the clean grid -> features, mask and labels.

``FEATURES`` is the table (qlib's "feature definitions as data"): each feature's name,
group and neutral value, in the run's column order; docs/features.md documents each and
a test checks the two agree. The formulas are compiled: the C++ features kernel
(csrc/features.cpp, ``tthf.engine._kernels.compute_features``) computes them in one pass
per symbol, applies the missing-value policy with the neutral values passed from this
table, and refuses a table whose names or order it does not implement. The numpy
implementation it replaced is the tests' oracle (tests/features/feature_oracle.py).

Every feature at minute ``t`` is a function of the day's rows at or before ``t`` only
(forward fills, shifts, trailing rolling windows, expanding day statistics, recursive
EMAs), so a real-time engine that sees the day's history up to ``t`` computes the same
values bit for bit: the day statistics come from a resumable ``DayState`` and the
windowed ones are computed over the last ``LOOKBACK`` minutes with start-independent
bits (power-of-two block sums in a fixed order).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tthf.engine import _kernels
from tthf.engine.features.labels import labels as day_labels
from tthf.engine.features.state import DayState

#: a minute's quote is usable for the mask if the last clean quote is at most this many minutes old
MAX_QUOTE_AGE = 5


class Feature(NamedTuple):
    """One model input: its name, its group (docs/features.md's sections) and what missing values become."""

    name: str
    group: str
    neutral: float = 0.0


FEATURES: tuple[Feature, ...] = (
    # price
    Feature("ret_1", "price"),
    Feature("ret_5", "price"),
    Feature("ret_15", "price"),
    Feature("ret_30", "price"),
    Feature("ret_open", "price"),
    Feature("mid_vs_ma5", "price"),
    Feature("mid_vs_ma15", "price"),
    Feature("mid_vs_ma30", "price"),
    Feature("dist_high_30", "price"),
    Feature("dist_low_30", "price"),
    Feature("microprice_dev", "price"),
    Feature("trade_vs_mid", "price"),
    Feature("mid_vs_vwap", "price"),
    # volume
    Feature("log_volume", "volume"),
    Feature("volume_rel_5", "volume"),
    Feature("volume_rel_15", "volume"),
    Feature("volume_rel_30", "volume"),
    Feature("log_trade_count", "volume"),
    Feature("log_dollar_volume", "volume"),
    Feature("log_cum_volume", "volume"),
    Feature("volume_share", "volume"),
    Feature("no_trade", "volume", 1.0),
    Feature("minutes_since_trade", "volume", 60.0),
    Feature("signed_flow_15", "volume"),
    # volatility
    Feature("rv_5", "volatility"),
    Feature("rv_10", "volatility"),
    Feature("rv_15", "volatility"),
    Feature("rv_30", "volatility"),
    Feature("rv_day", "volatility"),
    Feature("parkinson_15", "volatility"),
    Feature("range_30", "volatility"),
    Feature("vol_of_vol_30", "volatility"),
    Feature("vol_ratio_5_30", "volatility"),
    Feature("abs_ret_1", "volatility"),
    # microstructure
    Feature("spread_bps", "microstructure"),
    Feature("spread_vs_ma30", "microstructure"),
    Feature("log_bid_size", "microstructure"),
    Feature("log_ask_size", "microstructure"),
    Feature("log_depth", "microstructure"),
    Feature("imbalance", "microstructure"),
    Feature("imbalance_ma5", "microstructure"),
    Feature("imbalance_ma15", "microstructure"),
    Feature("imbalance_ma30", "microstructure"),
    Feature("imbalance_chg", "microstructure"),
    Feature("ofi_5", "microstructure"),
    Feature("bid_move", "microstructure"),
    Feature("ask_move", "microstructure"),
    Feature("quote_age", "microstructure", float(MAX_QUOTE_AGE + 1)),
    # technical
    Feature("rsi_14", "technical", 50.0),
    Feature("macd", "technical"),
    Feature("macd_signal", "technical"),
    Feature("macd_hist", "technical"),
    Feature("bb_pctb_20", "technical", 0.5),
    Feature("bb_width_20", "technical"),
    Feature("stoch_k_14", "technical", 0.5),
    Feature("zscore_30", "technical"),
    Feature("tod_frac", "technical"),
    Feature("tod_sin", "technical"),
    Feature("tod_cos", "technical"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_GROUPS: dict[str, str] = {f.name: f.group for f in FEATURES}
#: what a feature that is still null / NaN / inf after computation becomes (0 if not listed)
NEUTRAL: dict[str, float] = {f.name: f.neutral for f in FEATURES if f.neutral}


def neutral(name: str) -> float:
    return NEUTRAL.get(name, 0.0)


#: the neutral values in FEATURE_NAMES order, as the kernel takes them
_NEUTRAL_VALUES = np.array([f.neutral for f in FEATURES], dtype=np.float64)


def compute_grid(
    g: dict[str, np.ndarray],
    n_minutes: int,
    start: int = 0,
    *,
    state: DayState | None = None,
    labels: bool = True,
    out: np.ndarray | None = None,
    threads: int = 1,
    scale: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features (S, W-start, F) float32, mask (S, W) and labels (S, W, 2) of the grid ``g``.

    ``g`` holds (W, S) float64 arrays of the clean rows (``grid_arrays``); ``W`` may be less
    than the session length ``n_minutes`` (the day so far). Features are returned for the
    minutes ``start..W-1`` only, bit for bit equal to those of the whole grid: the day
    statistics come from ``state`` (brought up to date here; a fresh one if None), the
    windowed ones are computed over the last ``W - start + LOOKBACK`` minutes only. That is
    what makes the real-time update cheap. ``labels=False`` skips the labels (None); ``out``
    receives the features instead of a new array; ``threads`` kernel threads split the
    symbols (same bits). ``scale`` (``Scalers.kernel_scale``) makes the features the run's
    scaled inputs, in its order, with the bits of ``Scalers.transform``: what inference
    feeds the model, without the unscaled grid. docs/features.md defines every value.
    """
    m, n_sym = g["bid"].shape
    state = state or DayState()
    done = min(state.fit(max(m, n_minutes), n_sym), m)
    width = len(FEATURE_NAMES) if scale is None else len(scale[0])
    features = np.empty((n_sym, m - start, width), dtype=np.float32) if out is None else out
    columns = [g[name] for name in _kernels.FEATURE_COLUMNS]
    _kernels.compute_features(
        columns,
        state.ints,
        state.floats,
        done,
        start,
        n_minutes,
        _NEUTRAL_VALUES,
        FEATURE_NAMES,
        features,
        threads,
        scale,
    )
    state.rows = m
    mask = state.mask(m, MAX_QUOTE_AGE)
    if not labels:
        return features, mask, None
    r = state.returns(m)
    return features, mask, day_labels(mask, state.log_mid(m), r * r)

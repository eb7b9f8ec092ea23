"""How close the baseline's features are to tthf's, feature by feature.

Both are float32 after the same definitions in float64; they differ only by rounding
order (pandas and polars accumulate rolling sums differently), so the tolerance is a few
float32 ulps relative to ``max(1, |x|)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: max |tthf - baseline| / max(1, |tthf|) accepted for every feature but those below
RTOL = 2e-5
#: log-ratios and stds of rolling means of squared 1-minute returns (~1e-8): the rolling
#: add/remove cancellation differs between pandas and polars by up to ~2e-5 on 1000 symbols
RTOL_RV = 1e-4
#: features built on those rolling means of squares, held to RTOL_RV
RV_FEATURES = ("vol_ratio_5_30", "vol_of_vol_30")


@dataclass
class Parity:
    max_err: dict[str, float]  # per feature, over every cell
    mask_equal: bool
    symbols_equal: bool

    @property
    def worst(self) -> tuple[str, float]:
        name = max(self.max_err, key=self.max_err.__getitem__)
        return name, self.max_err[name]

    @property
    def ok(self) -> bool:
        return self.mask_equal and self.symbols_equal and not self.beyond_tolerance()

    def beyond_tolerance(self) -> dict[str, float]:
        return {n: e for n, e in self.max_err.items() if e > (RTOL_RV if n in RV_FEATURES else RTOL)}


def compare(
    tthf_features: np.ndarray,
    tthf_mask: np.ndarray,
    tthf_symbols: list[str],
    names: list[str],
    symbols: list[str],
    frame,
    mask: np.ndarray,
) -> Parity:
    """``tthf_features`` (S, M, F) in ``names`` order against the baseline's frame (S*M rows)."""
    if symbols != tthf_symbols:
        return Parity({}, False, False)
    base = frame[names].to_numpy(dtype=np.float32).reshape(tthf_features.shape)
    err = np.abs(tthf_features - base) / np.maximum(1.0, np.abs(tthf_features))
    max_err = {name: float(err[..., i].max()) if err.size else 0.0 for i, name in enumerate(names)}
    return Parity(max_err, bool(np.array_equal(mask, tthf_mask)), True)

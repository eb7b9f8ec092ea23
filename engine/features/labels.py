"""The targets: ``ret_1h`` and ``vol_10m`` on the grid (docs/features.md, "Labels").

Training fits on them and ``tthf-eval`` scores forecasts against them: one definition.
"""

from __future__ import annotations

import numpy as np

from tthf.engine.config import RET_HORIZON, VOL_HORIZON


def labels(mask: np.ndarray, lm: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """(S, M, 2) float32 ``[ret_1h, vol_10m]`` from the (S, M) mask, log mids and squared returns.

    NaN where unavailable: the horizon runs past the grid (the close), or a minute at
    either end (every minute, for ``vol_10m``) has no usable quote.
    """
    n_sym, m = mask.shape
    out = np.full((n_sym, m, 2), np.nan, dtype=np.float32)
    h = RET_HORIZON
    if m > h:
        ok = mask[:, : m - h] & mask[:, h:]
        out[:, : m - h, 0] = np.where(ok, lm[:, h:] - lm[:, : m - h], np.nan)
    h = VOL_HORIZON
    if m > h:
        ok = mask[:, : m - h].copy()
        total = np.zeros((n_sym, m - h))
        for k in range(1, h + 1):
            ok &= mask[:, k : m - h + k]
            total += r2[:, k : m - h + k]
        out[:, : m - h, 1] = np.where(ok, np.sqrt(total), np.nan)
    return out

"""Pure numpy reference for the windowing kernel (test-only; tthf.engine.windows is the API).

Written the obvious way, independent of the kernel's run-length algorithm: a window
ending at t is valid iff t >= L-1, (t - (L-1)) % stride == 0 and the mask is all True
over t-L+1 .. t; windows are listed symbol-major, minutes ascending.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def positions(mask: np.ndarray, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(sym_idx, minute_idx) int32 of every valid window, in cursor order."""
    n_sym, n_min = mask.shape
    if n_sym == 0 or n_min < seq_len:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    full = sliding_window_view(mask, seq_len, axis=1).all(axis=2)  # [s, k]: window ends at k + L - 1
    full[:, np.arange(full.shape[1]) % stride != 0] = False
    sym, k = np.nonzero(full)
    return sym.astype(np.int32), (k + seq_len - 1).astype(np.int32)


def windows(features: np.ndarray, sym: np.ndarray, minute: np.ndarray, seq_len: int, dtype: type) -> np.ndarray:
    """(n, seq_len, F) windows ending at (sym[i], minute[i]), converted with numpy's astype."""
    minutes = minute[:, None].astype(np.int64) + np.arange(1 - seq_len, 1)
    with np.errstate(over="ignore"):  # float16 overflow to inf is expected
        return features[sym[:, None], minutes].astype(dtype)

"""``DayState``: the day's expanding and recursive statistics, resumable minute by minute.

The numbers themselves are computed by the C++ features kernel (csrc/features.cpp), which
writes them here; this class owns the arrays and remembers how far they are up to date.
"""

from __future__ import annotations

import numpy as np

from tthf.engine import _kernels

#: minutes of history the windowed features at a minute read, at most (vol_of_vol_30: a 30-minute
#: std of rv_5, itself 5 minutes of returns); the real-time tail computes from this far back
LOOKBACK: int = _kernels.FEATURE_LOOKBACK
#: the kernel's per-minute fields: forward-fill minutes (int32) and running statistics (float64)
_N_INT, _N_FLOAT = _kernels.STATE_FIELDS
#: positions of the fields read here (csrc/features.hpp, IntField and FloatField)
_LAST_QUOTE, _LOG_MID, _RET = 0, 1, 2


class DayState:
    """The day's forward fills, running sums and EMAs so far, per (symbol, minute).

    Batch computes them once over the whole grid. The real-time engine keeps one DayState
    per day and passes it to every ``compute_grid`` call: only the minutes from the first
    one not yet computed (or invalidated by a late row) on are computed, each running
    statistic resuming from the minute before, which gives the bits of a computation from
    the open. Arrays are symbol-major (symbols, minutes, fields), as the kernel walks them.
    """

    def __init__(self) -> None:
        self.ints = np.empty((0, 0, _N_INT), dtype=np.int32)
        self.floats = np.empty((0, 0, _N_FLOAT))
        self.rows = 0  # minutes 0..rows-1 are up to date

    def invalidate(self, minute: int) -> None:
        """Grid rows from ``minute`` on changed: recompute from there next time."""
        self.rows = min(self.rows, minute)

    def fit(self, n_rows: int, n_sym: int) -> int:
        """Room for ``n_rows`` minutes of ``n_sym`` symbols; returns the minutes still up to date.

        New arrays (all to compute) when the symbols change or the room is short.
        """
        if self.ints.shape[0] != n_sym or self.ints.shape[1] < n_rows:
            self.ints = np.empty((n_sym, n_rows, _N_INT), dtype=np.int32)
            self.floats = np.empty((n_sym, n_rows, _N_FLOAT))
            self.rows = 0
        return self.rows

    def mask(self, m: int, max_age: int) -> np.ndarray:
        """(S, m) bool: a clean quote at most ``max_age`` minutes old at each of minutes 0..m-1."""
        last_quote = self.ints[:, :m, _LAST_QUOTE]
        return (last_quote >= 0) & (np.arange(m, dtype=np.int32) - last_quote <= max_age)

    def log_mid(self, m: int) -> np.ndarray:
        """(S, m) log of the forward-filled mid (NaN before the first quote)."""
        return self.floats[:, :m, _LOG_MID]

    def returns(self, m: int) -> np.ndarray:
        """(S, m) one-minute log mid returns."""
        return self.floats[:, :m, _RET]

"""Trailing-window and running primitives on time-major (minutes, symbols) float64 grids.

NaN is "missing". Time-major makes a lag a contiguous block of rows and a day-to-date sum
a row-wise cumulative sum vectorized across symbols, which measured faster than
(symbols, minutes). Every primitive gives bits that depend only on the values it covers,
not on where the arrays start, so the real-time engine (which computes only the last
minutes) gets the bits of the full-day batch.
"""

from __future__ import annotations

import numpy as np


def shift(x: np.ndarray, k: int, fill: float = np.nan) -> np.ndarray:
    """``x`` k minutes earlier in the same symbol (``fill`` before the open)."""
    out = np.empty_like(x)
    out[:k] = fill
    out[k:] = x[: len(x) - k]
    return out


def take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[idx[t, s], s]``, NaN where ``idx`` is -1."""
    flat = np.maximum(idx, 0) * x.shape[1] + np.arange(x.shape[1])
    out = np.take(x, flat)
    out[idx < 0] = np.nan
    return out


def add_earlier(out: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """``out += x`` k minutes earlier, in place (nothing is added before the open)."""
    out[k:] += x[: len(x) - k]
    return out


class Rolling:
    """Trailing k-minute sums and counts of the available (non-NaN) values of one series.

    Sums of power-of-two blocks (``s_2p[t] = s_p[t] + s_p[t-p]``) combined in a fixed
    order: the bits of a window's sum depend only on the values in that window, not on
    where the array starts, so the real-time engine (which computes only the last minutes)
    gets the bits of the full-day batch; a window of zeros sums to exactly zero.
    """

    def __init__(self, x: np.ndarray) -> None:
        valid = ~np.isnan(x)
        self._levels = {"sum": [np.where(valid, x, 0.0)], "count": [valid.astype(np.float64)]}

    def _window(self, kind: str, k: int) -> np.ndarray:
        levels = self._levels[kind]
        while 2 ** len(levels) <= k:
            span = 2 ** (len(levels) - 1)
            levels.append(add_earlier(levels[-1].copy(), levels[-1], span))
        out, done = None, 0
        for bit in range(len(levels) - 1, -1, -1):
            if k & (1 << bit):
                out = levels[bit].copy() if out is None else add_earlier(out, levels[bit], done)
                done += 1 << bit
        assert out is not None
        return out

    def sum(self, k: int) -> np.ndarray:
        return self._window("sum", k)

    def count(self, k: int) -> np.ndarray:
        return self._window("count", k)

    def mean(self, k: int) -> np.ndarray:
        n = self.count(k)
        return np.where(n > 0, self.sum(k) / np.maximum(n, 1.0), np.nan)

    def root_mean(self, k: int) -> np.ndarray:
        """Root of the trailing mean (of squares)."""
        return np.sqrt(self.mean(k))

    def std(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Trailing sample std (ddof 1, at least two values) and mean.

        Two-pass, deviations from the window's own mean summed lag by lag, rather than
        running sums of squares: a constant window of prices must give (almost exactly) zero,
        which the std floor tests.
        """
        mean, n = self.mean(k), self.count(k)
        available = self._levels["count"][0]
        values = self._levels["sum"][0]  # x with missing values as 0: their deviation times 0 adds nothing
        ss = np.zeros_like(values)
        m = len(values)
        for j in range(min(k, m)):
            d = values[: m - j] - mean[j:]
            d *= available[: m - j]
            d *= d
            ss[j:] += d
        return np.where(n >= 2, np.sqrt(ss / np.maximum(n - 1, 1.0)), np.nan), mean


def rolling_extreme(x: np.ndarray, k: int, fn: np.ufunc) -> np.ndarray:
    """Trailing k-minute max (``np.fmax``) or min (``np.fmin``) ignoring NaN, by doubling."""
    span, cur = 1, x
    while span * 2 <= k:
        cur = fn(cur, shift(cur, span))
        span *= 2
    return cur if span == k else fn(cur, shift(cur, k - span))


def after(x: np.ndarray, carry: np.ndarray | None) -> np.ndarray:
    """``x`` one minute earlier, the first row taken from ``carry`` (the minute before ``x``'s rows; None: missing)."""
    out = np.empty_like(x)
    out[0] = np.nan if carry is None else carry
    out[1:] = x[:-1]
    return out


def cumsum(x: np.ndarray, carry: np.ndarray | None) -> np.ndarray:
    """Running sum down the day, resumed from ``carry`` (the sum at the minute before ``x``'s rows).

    Resuming adds ``carry + x_0`` first, then the rest in order: the bits of a sum from the open.
    """
    if carry is None:
        return np.cumsum(x, axis=0)
    return np.cumsum(np.concatenate([carry[None], x]), axis=0)[1:]


def ewm(
    x: np.ndarray, t: np.ndarray, alpha: float, prev: np.ndarray | None, carry: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Recursive EMA ``y_t = (1 - alpha) y_{t-1} + alpha x_t`` seeded with the symbol's first value.

    ``x`` may only be missing before its first value (true of every input here). Closed form
    ``y_t = q^t (q^-t0 x_t0 + alpha sum_{t0<j<=t} q^-j x_j)``, ``q = 1 - alpha``: one running
    sum, resumable like the others (``prev``: ``x`` at the minute before, ``carry``: the sum
    there); the weights stay far below float64's range for 390 minutes. Returns y and the sum.
    """
    q = 1.0 - alpha
    valid = ~np.isnan(x)
    first = valid & np.isnan(after(x, prev))
    weight = np.where(first, 1.0, alpha) * q ** (-t)
    total = cumsum(np.where(valid, x * weight, 0.0), carry)
    y = total * q**t
    y[~valid] = np.nan
    return y, total

"""The naive forecasts every score is shown against, on a day's ``(S, M)`` grid (NaN where undefined).

All of them use only what was known at the forecast's minute ``t``:

- return: ``zero`` (no move) and ``reversal``: minus the log return of the last 30
  minutes (the ``ret_30`` feature), the classic short-term reversal signal. It ranks
  symbols; it is not a forecast in return units, so only ranking scores are shown for it;
- volatility: ``last_rv``, the realized volatility of the last 10 minutes
  ``sqrt(sum r[t-9..t]^2)``, which is the ``vol_10m`` label of minute ``t - 10`` (same
  mids, same mask rule: one definition with the labels); ``ewma_rv``, an exponentially
  weighted average of ``last_rv`` squared over the day (half-life ``EWMA_HALFLIFE``
  minutes); ``same_minute``, the mean realized ``vol_10m`` at the same minute of the
  session over the ``SAME_MINUTE_DAYS`` previous trading days (the intraday vol smile).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tthf.engine.config import VOL_HORIZON

REVERSAL_FEATURE = "ret_30"
EWMA_HALFLIFE = 30
SAME_MINUTE_DAYS = 5


def reversal(ret_30: np.ndarray) -> np.ndarray:
    """Short-term reversal: the last 30 minutes' log return, sign flipped."""
    return -np.asarray(ret_30, dtype=np.float32)


def last_rv(vol_labels: np.ndarray) -> np.ndarray:
    """``(S, M)`` realized volatility of the 10 minutes up to each minute, from the ``vol_10m`` labels."""
    out = np.full(vol_labels.shape, np.nan, dtype=np.float32)
    out[:, VOL_HORIZON:] = vol_labels[:, :-VOL_HORIZON]
    return out


def ewma_rv(rv: np.ndarray, halflife: float = EWMA_HALFLIFE) -> np.ndarray:
    """Square root of the EWMA of ``rv**2`` along minutes; a NaN minute keeps the last average.

    Starts at each symbol's first defined ``rv`` of the day, so the day's first values
    are the last-RV baseline itself.
    """
    decay = 0.5 ** (1.0 / halflife)
    var = np.asarray(rv, np.float64) ** 2
    out = np.full(var.shape, np.nan)
    state = np.full(var.shape[0], np.nan)
    for t in range(var.shape[1]):
        x = var[:, t]
        seen = np.isfinite(x)
        state = np.where(seen, np.where(np.isfinite(state), decay * state + (1 - decay) * x, x), state)
        out[:, t] = state
    return np.sqrt(out).astype(np.float32)


def same_minute(history: Sequence[tuple[list[str], np.ndarray]], symbols: list[str], n_minutes: int) -> np.ndarray:
    """``(S, M)`` mean realized ``vol_10m`` at each minute over previous days, by symbol.

    ``history`` holds ``(symbols, vol_10m labels (S_h, M_h))`` of earlier days (any order);
    symbols and minutes a previous day lacks do not count; NaN where no day has a value.
    """
    total = np.zeros((len(symbols), n_minutes))
    count = np.zeros((len(symbols), n_minutes))
    where = {s: i for i, s in enumerate(symbols)}
    for past_symbols, vol in history:
        rows = np.array([where.get(s, -1) for s in past_symbols], dtype=np.int64)
        keep = rows >= 0
        m = min(n_minutes, vol.shape[1])
        values = np.asarray(vol[keep, :m], np.float64)
        seen = np.isfinite(values)
        total[rows[keep], :m] += np.where(seen, values, 0.0)
        count[rows[keep], :m] += seen
    with np.errstate(invalid="ignore"):
        return (total / count).astype(np.float32)

"""``DayState``: the day's expanding and recursive statistics, resumable minute by minute."""

from __future__ import annotations

import numpy as np

from tthf.engine.features.rolling import after, cumsum, ewm, take

#: minutes of history the windowed features at a minute read, at most (vol_of_vol_30: a 30-minute
#: std of rv_5, itself 5 minutes of returns); the real-time tail computes from this far back
LOOKBACK = 40

#: DayState's arrays: forward-fill minutes (int64) and running statistics (float64)
_STATE_INT = ("last_quote", "last_trade", "last_px_at", "first_quote")
_STATE_FLOAT = (
    "mid",
    "lm",
    "r",
    "cum_pv",
    "cum_vpx",
    "cum_vol",
    "sum_r2",
    "n_r2",
    "s_ema12",
    "s_ema26",
    "s_gain",
    "s_loss",
    "s_signal",
    "macd",
    "gain",
    "loss",
    "macd_signal",
)
NEVER = np.iinfo(np.int64).max  # first_quote of a symbol without a quote yet


class DayState:
    """The day's expanding and recursive statistics (forward fills, running sums, EMAs) so far.

    Batch computes them once over the whole grid. The real-time engine keeps one DayState
    per day and passes it to every ``compute_grid`` call: only the minutes from the first
    one not yet computed (or invalidated by a late row) on are computed, each running
    statistic resuming from the minute before, which gives the bits of a computation from
    the open. Arrays are time-major (minutes, symbols).
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.rows = 0  # minutes 0..rows-1 are up to date

    def invalidate(self, minute: int) -> None:
        """Grid rows from ``minute`` on changed: recompute from there next time."""
        self.rows = min(self.rows, minute)

    def _fit(self, n_rows: int, n_sym: int) -> None:
        """Arrays for ``n_rows`` minutes of ``n_sym`` symbols; new ones (all to compute) when the symbols change."""
        some = self.arrays.get("mid")
        if some is None or some.shape[1] != n_sym or some.shape[0] < n_rows:
            self.arrays = {n: np.empty((n_rows, n_sym), dtype=np.int64) for n in _STATE_INT}
            self.arrays.update({n: np.empty((n_rows, n_sym)) for n in _STATE_FLOAT})
            self.rows = 0

    def update(self, g: dict[str, np.ndarray], n_minutes: int) -> None:
        """Bring minutes ``rows..W-1`` up to date from the grid ``g`` (W = its rows) of an ``n_minutes`` day."""
        w, n_sym = g["bid"].shape
        self._fit(max(w, n_minutes), n_sym)
        c = min(self.rows, w)
        if c < w:
            self._advance(g, c, w)
        self.rows = w

    def _advance(self, g: dict[str, np.ndarray], c: int, w: int) -> None:
        st = self.arrays
        before = (lambda name: st[name][c - 1]) if c > 0 else (lambda name: None)
        minute = np.arange(c, w)[:, None]
        t = minute.astype(np.float64)

        def ffill(valid: np.ndarray, name: str) -> np.ndarray:
            out = np.maximum.accumulate(np.where(valid, minute, -1), axis=0)
            if c > 0:
                np.maximum(out, st[name][c - 1], out=out)
            st[name][c:w] = out
            return out

        volume, close, vwap = g["volume"][c:w], g["close"][c:w], g["vwap"][c:w]
        traded = volume > 0
        quoted = ~np.isnan(g["bid"][c:w])
        last_quote = ffill(quoted, "last_quote")
        ffill(traded, "last_trade")
        ffill(traded & ~np.isnan(close), "last_px_at")
        first = np.minimum.accumulate(np.where(quoted, minute, NEVER), axis=0)
        if c > 0:
            np.minimum(first, st["first_quote"][c - 1], out=first)
        st["first_quote"][c:w] = first
        mid = (take(g["bid"], last_quote) + take(g["ask"], last_quote)) / 2
        lm = np.log(mid)
        r = lm - after(lm, before("lm"))
        px = np.where(~np.isnan(vwap), vwap, np.where(~np.isnan(close), close, mid))
        px_ok = traded & ~np.isnan(px)
        st["cum_pv"][c:w] = cumsum(np.where(px_ok, px * volume, 0.0), before("cum_pv"))
        st["cum_vpx"][c:w] = cumsum(np.where(px_ok, volume, 0.0), before("cum_vpx"))
        st["cum_vol"][c:w] = cumsum(volume, before("cum_vol"))
        r2 = r * r
        r2_valid = ~np.isnan(r2)
        st["sum_r2"][c:w] = cumsum(np.where(r2_valid, r2, 0.0), before("sum_r2"))
        st["n_r2"][c:w] = cumsum(r2_valid.astype(np.float64), before("n_r2"))
        ema12, st["s_ema12"][c:w] = ewm(mid, t, 2 / 13, before("mid"), before("s_ema12"))
        ema26, st["s_ema26"][c:w] = ewm(mid, t, 2 / 27, before("mid"), before("s_ema26"))
        macd = np.log(ema12 / ema26) * 1e4
        st["gain"][c:w], st["s_gain"][c:w] = ewm(np.maximum(r, 0.0), t, 1 / 14, before("r"), before("s_gain"))
        st["loss"][c:w], st["s_loss"][c:w] = ewm(np.maximum(-r, 0.0), t, 1 / 14, before("r"), before("s_loss"))
        st["macd_signal"][c:w], st["s_signal"][c:w] = ewm(macd, t, 2 / 10, before("macd"), before("s_signal"))
        st["mid"][c:w], st["lm"][c:w], st["r"][c:w], st["macd"][c:w] = mid, lm, r, macd

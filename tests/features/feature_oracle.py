"""The numpy oracle of the features kernel: the vectorized implementation tthf used before
the formulas moved into C++ (csrc/features.cpp), kept as the reference the kernel is
tested against (like tests/window_oracle.py for the windows kernel).

Time-major (minutes, symbols) float64 arrays, vectorized across symbols; the same
definitions (docs/features.md), the same missing-value policy from the FEATURES table,
and the same start-independent window sums, so the kernel must agree with it to float32
rounding. ``oracle_grid`` is the old ``compute_grid``: features (S, W-start, F), mask (S, W).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from tthf.engine.features.formulas import FEATURE_NAMES, MAX_QUOTE_AGE, neutral

LOOKBACK = 40
_VOL_EPS = 1e-6
_REL_STD_FLOOR = 1e-9


# ---- rolling primitives (the engine's numpy versions before csrc/features.cpp)


def shift(x: np.ndarray, k: int, fill: float = np.nan) -> np.ndarray:
    """``x`` k minutes earlier in the same symbol (``fill`` before the open)."""
    out = np.empty_like(x)
    out[:k] = fill
    out[k:] = x[: max(0, len(x) - k)]  # (the engine's version failed on grids shorter than k minutes)
    return out


def take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[idx[t, s], s]``, NaN where ``idx`` is -1."""
    flat = np.maximum(idx, 0) * x.shape[1] + np.arange(x.shape[1])
    out = np.take(x, flat)
    out[idx < 0] = np.nan
    return out


def add_earlier(out: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """``out += x`` k minutes earlier, in place (nothing is added before the open)."""
    out[k:] += x[: max(0, len(x) - k)]
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


# ---- day state (engine/features/state.py before the kernel)

#: OracleState's arrays: forward-fill minutes (int64) and running statistics (float64)
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


class OracleState:
    """The day's expanding and recursive statistics (forward fills, running sums, EMAs) so far.

    Batch computes them once over the whole grid. The real-time engine kept one per day
    and passed it to every call: only the minutes from the first
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


# ---- formulas (engine/features/formulas.py before the kernel)


class _Inputs(NamedTuple):
    """The intermediates the formulas share, time-major, from ``LOOKBACK`` minutes before the first wanted."""

    t: np.ndarray  # (W, 1) minute index as float
    phase: np.ndarray  # (W, 1) share of the session elapsed
    volume: np.ndarray
    close: np.ndarray
    high: np.ndarray
    low: np.ndarray
    trade_count: np.ndarray
    bid: np.ndarray  # the last clean quote's fields, forward-filled
    ask: np.ndarray
    bs: np.ndarray
    as_: np.ndarray
    pbid: np.ndarray  # the same one minute earlier
    pask: np.ndarray
    pbs: np.ndarray
    pas: np.ndarray
    mid: np.ndarray
    lm: np.ndarray  # log mid
    r: np.ndarray  # one-minute log mid return
    r2: np.ndarray
    px: np.ndarray  # trade price: vwap, else close, else mid
    age: np.ndarray  # minutes since the last clean quote
    last_trade: np.ndarray
    last_px: np.ndarray
    lm_open: np.ndarray
    cum_pv: np.ndarray
    cum_vpx: np.ndarray
    cum_vol: np.ndarray
    n_r2: np.ndarray
    sum_r2: np.ndarray
    gain: np.ndarray
    loss: np.ndarray
    macd: np.ndarray
    macd_signal: np.ndarray
    depth: np.ndarray
    lvol: np.ndarray
    imb: np.ndarray
    spread: np.ndarray
    hi30: np.ndarray  # trailing 30-minute high and low of the mid
    lo30: np.ndarray
    w_mid: Rolling
    w_r2: Rolling


def _inputs(g: dict[str, np.ndarray], st: dict[str, np.ndarray], lo: int, m: int, n_minutes: int) -> _Inputs:
    def cut(x: np.ndarray) -> np.ndarray:
        return x[lo:m]

    t_all = np.arange(m, dtype=np.float64)[:, None]
    t = t_all[lo:]
    last_quote = cut(st["last_quote"])
    age = np.where(last_quote >= 0, t - last_quote, np.nan)
    volume, close, vwap = cut(g["volume"]), cut(g["close"]), cut(g["vwap"])
    bid, ask, bs, as_ = (take(g[c], last_quote) for c in ("bid", "ask", "bid_size", "ask_size"))
    mid, lm, r = cut(st["mid"]), cut(st["lm"]), cut(st["r"])
    first = cut(st["first_quote"])
    depth = bs + as_
    return _Inputs(
        t=t,
        phase=t / n_minutes,
        volume=volume,
        close=close,
        high=cut(g["high"]),
        low=cut(g["low"]),
        trade_count=cut(g["trade_count"]),
        bid=bid,
        ask=ask,
        bs=bs,
        as_=as_,
        pbid=shift(bid, 1),
        pask=shift(ask, 1),
        pbs=shift(bs, 1),
        pas=shift(as_, 1),
        mid=mid,
        lm=lm,
        r=r,
        r2=r * r,
        px=np.where(~np.isnan(vwap), vwap, np.where(~np.isnan(close), close, mid)),
        age=age,
        last_trade=cut(st["last_trade"]),
        last_px=take(g["close"], cut(st["last_px_at"])),
        lm_open=take(st["lm"], np.where(first == NEVER, -1, first)),
        cum_pv=cut(st["cum_pv"]),
        cum_vpx=cut(st["cum_vpx"]),
        cum_vol=cut(st["cum_vol"]),
        n_r2=cut(st["n_r2"]),
        sum_r2=cut(st["sum_r2"]),
        gain=cut(st["gain"]),
        loss=cut(st["loss"]),
        macd=cut(st["macd"]),
        macd_signal=cut(st["macd_signal"]),
        depth=depth,
        lvol=np.log1p(volume),
        imb=np.where(depth == 0, 0.0, (bs - as_) / depth),
        spread=(ask - bid) / mid * 1e4,
        hi30=rolling_extreme(mid, 30, np.fmax),
        lo30=rolling_extreme(mid, 30, np.fmin),
        w_mid=Rolling(mid),
        w_r2=Rolling(r * r),
    )


def _price(x: _Inputs) -> dict[str, np.ndarray]:
    lm, mid = x.lm, x.mid
    return {
        "ret_1": x.r,
        "ret_5": lm - shift(lm, 5),
        "ret_15": lm - shift(lm, 15),
        "ret_30": lm - shift(lm, 30),
        "ret_open": lm - x.lm_open,
        "mid_vs_ma5": lm - np.log(x.w_mid.mean(5)),
        "mid_vs_ma15": lm - np.log(x.w_mid.mean(15)),
        "mid_vs_ma30": lm - np.log(x.w_mid.mean(30)),
        "dist_high_30": lm - np.log(x.hi30),
        "dist_low_30": lm - np.log(x.lo30),
        "microprice_dev": ((x.bid * x.as_ + x.ask * x.bs) / x.depth / mid - 1) * 1e4,
        "trade_vs_mid": np.log(x.last_px / mid) * 1e4,
        "mid_vs_vwap": np.log(mid / (x.cum_pv / x.cum_vpx)) * 1e4,
    }


def _volume(x: _Inputs) -> dict[str, np.ndarray]:
    w_vol = Rolling(x.volume)
    signed = np.nan_to_num(np.sign(x.close - shift(x.mid, 1)), nan=0.0) * x.lvol
    return {
        "log_volume": x.lvol,
        "volume_rel_5": x.lvol - np.log1p(w_vol.mean(5)),
        "volume_rel_15": x.lvol - np.log1p(w_vol.mean(15)),
        "volume_rel_30": x.lvol - np.log1p(w_vol.mean(30)),
        "log_trade_count": np.log1p(x.trade_count),
        "log_dollar_volume": np.log1p(x.px * x.volume),
        "log_cum_volume": np.log1p(x.cum_vol),
        "volume_share": x.volume / x.cum_vol,
        "no_trade": (x.volume <= 0).astype(np.float64),
        "minutes_since_trade": np.minimum(np.where(x.last_trade >= 0, x.t - x.last_trade, np.nan), 60),
        "signed_flow_15": Rolling(signed).mean(15),
    }


def _volatility(x: _Inputs) -> dict[str, np.ndarray]:
    rv5, rv30 = x.w_r2.root_mean(5), x.w_r2.root_mean(30)
    hl = np.log(x.high / x.low) ** 2 / (4 * math.log(2))
    return {
        "rv_5": rv5,
        "rv_10": x.w_r2.root_mean(10),
        "rv_15": x.w_r2.root_mean(15),
        "rv_30": rv30,
        "rv_day": np.where(np.isnan(x.r2), np.nan, np.sqrt(x.sum_r2 / x.n_r2)),
        "parkinson_15": Rolling(hl).root_mean(15),
        "range_30": np.log(x.hi30 / x.lo30),
        "vol_of_vol_30": Rolling(rv5).std(30)[0],
        "vol_ratio_5_30": np.log((rv5 + _VOL_EPS) / (rv30 + _VOL_EPS)),
        "abs_ret_1": np.abs(x.r),
    }


def _microstructure(x: _Inputs) -> dict[str, np.ndarray]:
    bid, ask, pbid, pask = x.bid, x.ask, x.pbid, x.pask
    w_imb = Rolling(x.imb)
    ofi = (  # NaN comparisons are False: no quote yet or no previous minute adds nothing
        np.where(bid >= pbid, x.bs, 0.0)
        - np.where(bid <= pbid, x.pbs, 0.0)
        - np.where(ask <= pask, x.as_, 0.0)
        + np.where(ask >= pask, x.pas, 0.0)
    )
    return {
        "spread_bps": x.spread,
        "spread_vs_ma30": x.spread - Rolling(x.spread).mean(30),
        "log_bid_size": np.log1p(x.bs),
        "log_ask_size": np.log1p(x.as_),
        "log_depth": np.log1p(x.depth),
        "imbalance": x.imb,
        "imbalance_ma5": w_imb.mean(5),
        "imbalance_ma15": w_imb.mean(15),
        "imbalance_ma30": w_imb.mean(30),
        "imbalance_chg": x.imb - shift(x.imb, 1),
        "ofi_5": Rolling(ofi).sum(5) / Rolling(x.depth).mean(5),
        "bid_move": np.sign(bid - pbid),
        "ask_move": np.sign(ask - pask),
        "quote_age": np.minimum(x.age, MAX_QUOTE_AGE + 1),
    }


def _technical(x: _Inputs) -> dict[str, np.ndarray]:
    mid = x.mid
    sd20, ma20 = x.w_mid.std(20)
    sd30, ma30 = x.w_mid.std(30)
    hi14, lo14 = rolling_extreme(mid, 14, np.fmax), rolling_extreme(mid, 14, np.fmin)

    def floor(sd: np.ndarray, level: np.ndarray) -> np.ndarray:
        return np.where(sd > _REL_STD_FLOOR * np.abs(level), sd, np.nan)

    return {
        "rsi_14": 100 * x.gain / (x.gain + x.loss),
        "macd": x.macd,
        "macd_signal": x.macd_signal,
        "macd_hist": x.macd - x.macd_signal,
        "bb_pctb_20": (mid - ma20 + 2 * sd20) / (4 * floor(sd20, ma20)),
        "bb_width_20": 4 * sd20 / ma20,
        "stoch_k_14": (mid - lo14) / (hi14 - lo14),
        "zscore_30": (mid - ma30) / floor(sd30, ma30),
        "tod_frac": np.broadcast_to(x.phase, mid.shape),
        "tod_sin": np.broadcast_to(np.sin(2 * math.pi * x.phase), mid.shape),
        "tod_cos": np.broadcast_to(np.cos(2 * math.pi * x.phase), mid.shape),
    }


#: each group's formulas (the keys of FEATURE_GROUPS' values)
GROUP_FORMULAS: dict[str, Callable[[_Inputs], dict[str, np.ndarray]]] = {
    "price": _price,
    "volume": _volume,
    "volatility": _volatility,
    "microstructure": _microstructure,
    "technical": _technical,
}


def oracle_grid(
    g: dict[str, np.ndarray], n_minutes: int, start: int = 0, *, state: OracleState | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features (S, W-start, F) float32 and mask (S, W) of the grid ``g`` (the old ``compute_grid``).

    ``g`` holds (W, S) float64 arrays of the clean rows (``grid_arrays``); the day statistics
    come from ``state`` (brought up to date here; a fresh one if None), the windowed ones are
    computed over the last ``W - start + LOOKBACK`` minutes only.
    """
    with np.errstate(all="ignore"):  # NaN and inf are expected; the missing-value policy handles them
        state = state or OracleState()
        state.update(g, n_minutes)
        st = state.arrays
        m, n_sym = g["bid"].shape
        last_quote = st["last_quote"][:m]
        age = np.where(last_quote >= 0, np.arange(m, dtype=np.float64)[:, None] - last_quote, np.nan)
        mask = age <= MAX_QUOTE_AGE
        lo = max(0, start - LOOKBACK)
        x = _inputs(g, st, lo, m, n_minutes)
        values: dict[str, np.ndarray] = {}
        for formulas in GROUP_FORMULAS.values():
            values.update(formulas(x))
        features = _apply_policy(values, n_sym, m - start, start - lo)
        return features, np.ascontiguousarray(mask.T)


def _apply_policy(values: dict[str, np.ndarray], n_sym: int, n_out: int, skip: int) -> np.ndarray:
    """The (S, n_out, F) float32 features in FEATURE_NAMES order, non-finite values set to their neutral value."""
    if set(values) != set(FEATURE_NAMES):
        raise AssertionError(f"formulas and FEATURES disagree: {sorted(set(values) ^ set(FEATURE_NAMES))}")
    features = np.empty((n_sym, n_out, len(FEATURE_NAMES)), dtype=np.float32)
    for i, name in enumerate(FEATURE_NAMES):
        x = values[name][skip:].astype(np.float32)  # the policy looks at the float32 value (overflow -> inf)
        x[~np.isfinite(x)] = neutral(name)
        features[:, :, i] = x.T
    return features

"""The 59 features as data, and ``compute_grid``: the clean grid -> features, mask and labels.

``FEATURES`` is the table (qlib's "feature definitions as data"): each feature's name,
group and neutral value, in the run's column order; docs/features.md documents each and
a test checks the two agree. The formulas sit in one function per group (``_price``,
``_volume``, ...), each reading the shared intermediates of ``_Inputs``.

Every feature at minute ``t`` is a function of the day's rows at or before ``t`` only
(forward fills, shifts, trailing rolling windows, expanding day statistics, recursive
EMAs), so a real-time engine that sees the day's history up to ``t`` computes the same
values bit for bit: the day statistics come from a resumable ``DayState`` and the
windowed ones are computed over the last ``LOOKBACK`` minutes with start-independent
bits (``tthf.engine.features.rolling``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from tthf.engine.features.labels import labels as day_labels
from tthf.engine.features.rolling import Rolling, rolling_extreme, shift, take
from tthf.engine.features.state import LOOKBACK, NEVER, DayState

#: a minute's quote is usable for the mask if the last clean quote is at most this many minutes old
MAX_QUOTE_AGE = 5
#: added to both realized vols in vol_ratio_5_30 so that a quiet stretch is a finite ratio
_VOL_EPS = 1e-6
#: rolling std below this fraction of the level is rounding noise, treated as zero
_REL_STD_FLOOR = 1e-9


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


def compute_grid(
    g: dict[str, np.ndarray],
    n_minutes: int,
    start: int = 0,
    *,
    state: DayState | None = None,
    labels: bool = True,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features (S, W-start, F) float32, mask (S, W) and labels (S, W, 2) of the grid ``g``.

    ``g`` holds (W, S) float64 arrays of the clean rows (``grid_arrays``); ``W`` may be less
    than the session length ``n_minutes`` (the day so far). Features are returned for the
    minutes ``start..W-1`` only, bit for bit equal to those of the whole grid: the day
    statistics come from ``state`` (brought up to date here; a fresh one if None), the
    windowed ones are computed over the last ``W - start + LOOKBACK`` minutes only. That is
    what makes the real-time update cheap. ``labels=False`` skips the labels (None); ``out``
    receives the features instead of a new array. docs/features.md defines every value.
    """
    with np.errstate(all="ignore"):  # NaN and inf are expected; the missing-value policy handles them
        state = state or DayState()
        state.update(g, n_minutes)
        st = state.arrays
        m, n_sym = g["bid"].shape
        last_quote = st["last_quote"][:m]
        age = np.where(last_quote >= 0, np.arange(m, dtype=np.float64)[:, None] - last_quote, np.nan)
        mask = age <= MAX_QUOTE_AGE
        r = st["r"][:m]
        lab = day_labels(mask, st["lm"][:m], r * r) if labels else None
        lo = max(0, start - LOOKBACK)
        x = _inputs(g, st, lo, m, n_minutes)
        values: dict[str, np.ndarray] = {}
        for formulas in GROUP_FORMULAS.values():
            values.update(formulas(x))
        features = _apply_policy(values, n_sym, m - start, start - lo, out)
        return features, np.ascontiguousarray(mask.T), lab


def _apply_policy(
    values: dict[str, np.ndarray], n_sym: int, n_out: int, skip: int, out: np.ndarray | None
) -> np.ndarray:
    """The (S, n_out, F) float32 features in FEATURE_NAMES order, non-finite values set to their neutral value."""
    if set(values) != set(FEATURE_NAMES):
        raise AssertionError(f"formulas and FEATURES disagree: {sorted(set(values) ^ set(FEATURE_NAMES))}")
    features = np.empty((n_sym, n_out, len(FEATURE_NAMES)), dtype=np.float32) if out is None else out
    for i, name in enumerate(FEATURE_NAMES):
        x = values[name][skip:].astype(np.float32)  # the policy looks at the float32 value (overflow -> inf)
        x[~np.isfinite(x)] = neutral(name)
        features[:, :, i] = x.T
    return features

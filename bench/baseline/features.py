"""The 59 features of docs/features.md, ported one by one to pandas the usual way.

One long frame per day, one row per (symbol, minute) of the session grid, and every
per-symbol operation a ``groupby("symbol")`` followed by ``shift``, ``ffill``,
``rolling``, ``ewm`` or ``cumsum``. This is how the original system computed them;
each definition below follows the docs' table, not tthf's polars code.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from tthf.engine.data.calendar import session_bounds
from tthf.engine.features import MAX_QUOTE_AGE, NEUTRAL  # the docs' constants, not the polars code

QUOTE = ["bid", "ask", "bid_size", "ask_size"]
TRADE_PRICES = ["open", "high", "low", "close", "vwap"]


def clean(raw: pd.DataFrame, day: dt.date) -> tuple[pd.DataFrame, list[str], int]:
    """Regular-session rows with the docs' cleaning rules applied, on the full (symbol, minute) grid."""
    start, end = session_bounds(day)
    n_min = int((end - start).total_seconds()) // 60
    df = raw.copy()
    for name in ("trade_count", "vwap"):
        if name not in df.columns:
            df[name] = np.nan
    df = df[df["symbol"].notna() & df["ts"].notna()]
    off = (df["ts"] - pd.Timestamp(start)) // pd.Timedelta(microseconds=1)
    minute_us = 60_000_000
    df = df[(off >= 0) & (off < n_min * minute_us) & (off % minute_us == 0)].copy()
    df["tid"] = (off[df.index] // minute_us).astype(np.int64)
    df = df.drop(columns="ts")
    for name in df.columns:
        if name not in ("symbol", "tid"):
            df[name] = pd.to_numeric(df[name]).to_numpy(dtype=np.float64, na_value=np.nan)
    df = df.drop_duplicates()
    if df.duplicated(["symbol", "tid"]).any():
        raise ValueError(f"{day}: rows share a (symbol, ts) with different values")
    symbols = sorted(df["symbol"].unique())

    q = df[QUOTE]
    bad_quote = (
        q.isna().any(axis=1)
        | ~np.isfinite(q).all(axis=1)
        | (df["bid"] <= 0)
        | (df["ask"] <= 0)
        | (df["bid_size"] < 0)
        | (df["ask_size"] < 0)
        | (df["bid"] > df["ask"])
    )
    df.loc[bad_quote, QUOTE] = np.nan
    for name in TRADE_PRICES:
        df[name] = df[name].where(np.isfinite(df[name]) & (df[name] > 0))
    df["volume"] = df["volume"].where(np.isfinite(df["volume"]) & (df["volume"] >= 0), 0.0)
    df["trade_count"] = df["trade_count"].where(np.isfinite(df["trade_count"]) & (df["trade_count"] >= 0))

    grid = pd.MultiIndex.from_product([symbols, range(n_min)], names=["symbol", "tid"])
    df = df.set_index(["symbol", "tid"]).reindex(grid).reset_index()
    df["volume"] = df["volume"].fillna(0.0)
    return df, symbols, n_min


def build_features(raw: pd.DataFrame, day: dt.date) -> tuple[list[str], pd.DataFrame, np.ndarray]:
    """``(symbols, features, mask)``: a (S*M, 59) float32 frame in symbol-major order and the (S, M) mask."""
    df, symbols, n_min = clean(raw, day)
    g = df.groupby("symbol", sort=False)

    def by_sym(x: pd.Series):
        return x.groupby(df["symbol"], sort=False)

    def rolling(x: pd.Series, k: int, how: str, min_periods: int = 1) -> pd.Series:
        out = getattr(by_sym(x).rolling(k, min_periods=min_periods), how)()
        return out.reset_index(level=0, drop=True)

    def ewm(x: pd.Series, **kw) -> pd.Series:
        return by_sym(x).ewm(adjust=False, **kw).mean().reset_index(level=0, drop=True)

    def lag(x: pd.Series, k: int) -> pd.Series:
        return by_sym(x).shift(k)

    tid = df["tid"].astype(np.float64)
    traded = df["volume"] > 0
    last_quote = by_sym(tid.where(df["bid"].notna())).ffill()
    last_trade = by_sym(tid.where(traded)).ffill()
    last_px = by_sym(df["close"].where(traded)).ffill()
    for name in QUOTE:
        df[name] = g[name].ffill()

    bid, ask, bsz, asz, vol = df["bid"], df["ask"], df["bid_size"], df["ask_size"], df["volume"]
    age = tid - last_quote
    mask = (age <= MAX_QUOTE_AGE).to_numpy().reshape(len(symbols), n_min)
    mid = (bid + ask) / 2
    depth = bsz + asz
    px = df["vwap"].fillna(df["close"]).fillna(mid)
    lvol = np.log1p(vol)
    lm = np.log(mid)
    imb = ((bsz - asz) / depth).fillna(0.0).where(depth.notna())
    spread = (ask - bid) / mid * 1e4
    has_px = traded & px.notna()
    pv = (px * vol).where(has_px, 0.0)
    vpx = vol.where(has_px, 0.0)
    pbid, pask, pbsz, pasz = lag(bid, 1), lag(ask, 1), lag(bsz, 1), lag(asz, 1)
    ofi = (
        bsz.where(bid >= pbid, 0.0)
        - pbsz.where(bid <= pbid, 0.0)
        - asz.where(ask <= pask, 0.0)
        + pasz.where(ask >= pask, 0.0)
    )
    r = lm - lag(lm, 1)
    r2 = r**2
    cum_vol = by_sym(vol).cumsum()
    vwap_day = by_sym(pv).cumsum() / by_sym(vpx).cumsum()
    macd = np.log(ewm(mid, span=12) / ewm(mid, span=26)) * 1e4
    macd_signal = ewm(macd, span=9)
    gain = ewm(r.clip(lower=0), alpha=1 / 14)
    loss = ewm((-r).clip(lower=0), alpha=1 / 14)
    rv = {k: np.sqrt(rolling(r2, k, "mean")) for k in (5, 10, 15, 30)}
    ma = {k: rolling(mid, k, "mean") for k in (5, 15, 20, 30)}
    sd = {k: rolling(mid, k, "std", min_periods=2) for k in (20, 30)}
    hi = {k: rolling(mid, k, "max") for k in (14, 30)}
    lo = {k: rolling(mid, k, "min") for k in (14, 30)}
    hl = (np.log(df["high"] / df["low"]) ** 2 / (4 * math.log(2))).where(df["high"].notna() & df["low"].notna())
    flow = (np.sign(df["close"] - lag(mid, 1)).fillna(0.0)) * lvol
    r2_count = by_sym(r2.notna().astype(np.float64)).cumsum()
    phase = tid / n_min

    def floored(s: pd.Series, level: pd.Series) -> pd.Series:  # a std that is rounding noise counts as zero
        return s.where(s > 1e-9 * level.abs())

    features = {
        "ret_1": r,
        "ret_5": lm - lag(lm, 5),
        "ret_15": lm - lag(lm, 15),
        "ret_30": lm - lag(lm, 30),
        "ret_open": lm - by_sym(lm).transform("first"),
        "mid_vs_ma5": lm - np.log(ma[5]),
        "mid_vs_ma15": lm - np.log(ma[15]),
        "mid_vs_ma30": lm - np.log(ma[30]),
        "dist_high_30": lm - np.log(hi[30]),
        "dist_low_30": lm - np.log(lo[30]),
        "microprice_dev": ((bid * asz + ask * bsz) / depth / mid - 1) * 1e4,
        "trade_vs_mid": np.log(last_px / mid) * 1e4,
        "mid_vs_vwap": np.log(mid / vwap_day) * 1e4,
        "log_volume": lvol,
        "volume_rel_5": lvol - np.log1p(rolling(vol, 5, "mean")),
        "volume_rel_15": lvol - np.log1p(rolling(vol, 15, "mean")),
        "volume_rel_30": lvol - np.log1p(rolling(vol, 30, "mean")),
        "log_trade_count": np.log1p(df["trade_count"]),
        "log_dollar_volume": np.log1p(px * vol),
        "log_cum_volume": np.log1p(cum_vol),
        "volume_share": vol / cum_vol,
        "no_trade": (vol <= 0).astype(np.float64),
        "minutes_since_trade": (tid - last_trade).clip(upper=60),
        "signed_flow_15": rolling(flow, 15, "mean"),
        "rv_5": rv[5],
        "rv_10": rv[10],
        "rv_15": rv[15],
        "rv_30": rv[30],
        "rv_day": np.sqrt(by_sym(r2).cumsum() / r2_count),
        "parkinson_15": np.sqrt(rolling(hl, 15, "mean")),
        "range_30": np.log(hi[30] / lo[30]),
        "vol_of_vol_30": rolling(rv[5], 30, "std", min_periods=2),
        "vol_ratio_5_30": np.log((rv[5] + 1e-6) / (rv[30] + 1e-6)),
        "abs_ret_1": r.abs(),
        "spread_bps": spread,
        "spread_vs_ma30": spread - rolling(spread, 30, "mean"),
        "log_bid_size": np.log1p(bsz),
        "log_ask_size": np.log1p(asz),
        "log_depth": np.log1p(depth),
        "imbalance": imb,
        "imbalance_ma5": rolling(imb, 5, "mean"),
        "imbalance_ma15": rolling(imb, 15, "mean"),
        "imbalance_ma30": rolling(imb, 30, "mean"),
        "imbalance_chg": imb - lag(imb, 1),
        "ofi_5": rolling(ofi, 5, "sum") / rolling(depth, 5, "mean"),
        "bid_move": np.sign(bid - pbid),
        "ask_move": np.sign(ask - pask),
        "quote_age": age.clip(upper=MAX_QUOTE_AGE + 1),
        "rsi_14": 100 * gain / (gain + loss),
        "macd": macd,
        "macd_signal": macd_signal,
        "macd_hist": macd - macd_signal,
        "bb_pctb_20": (mid - ma[20] + 2 * sd[20]) / (4 * floored(sd[20], ma[20])),
        "bb_width_20": 4 * sd[20] / ma[20],
        "stoch_k_14": (mid - lo[14]) / (hi[14] - lo[14]),
        "zscore_30": (mid - ma[30]) / floored(sd[30], ma[30]),
        "tod_frac": phase,
        "tod_sin": np.sin(2 * math.pi * phase),
        "tod_cos": np.cos(2 * math.pi * phase),
    }
    out = pd.DataFrame(features).astype(np.float32)
    out = out.where(
        np.isfinite(out), pd.Series({n: NEUTRAL.get(n, 0.0) for n in out.columns}, dtype=np.float32), axis=1
    )
    return symbols, out, mask

"""Raw minutely BBO bars of one day -> the dense feature grid, mask and labels.

The same code builds the training days and the inference days, so features cannot drift
between the two. Every feature at minute ``t`` is a function of the day's rows at or before
``t`` only (forward fills, shifts, trailing rolling windows, expanding day statistics,
recursive EMAs), so a real-time engine that sees the day's history up to ``t`` computes
the same values bit for bit. docs/features.md is the reference for every definition, the
cleaning rules, the missing-value policy, the mask and the labels.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

from tthf.engine.calendar import is_trading_day, session_bounds, session_minutes
from tthf.engine.config import RET_HORIZON, VOL_HORIZON
from tthf.engine.daydata import DayFeatures
from tthf.errors import DataError, NoDataError, UsageError

#: a minute's quote is usable for the mask if the last clean quote is at most this many minutes old
MAX_QUOTE_AGE = 5

FEATURE_GROUPS: dict[str, str] = {
    # price
    "ret_1": "price",
    "ret_5": "price",
    "ret_15": "price",
    "ret_30": "price",
    "ret_open": "price",
    "mid_vs_ma5": "price",
    "mid_vs_ma15": "price",
    "mid_vs_ma30": "price",
    "dist_high_30": "price",
    "dist_low_30": "price",
    "microprice_dev": "price",
    "trade_vs_mid": "price",
    "mid_vs_vwap": "price",
    # volume
    "log_volume": "volume",
    "volume_rel_5": "volume",
    "volume_rel_15": "volume",
    "volume_rel_30": "volume",
    "log_trade_count": "volume",
    "log_dollar_volume": "volume",
    "log_cum_volume": "volume",
    "volume_share": "volume",
    "no_trade": "volume",
    "minutes_since_trade": "volume",
    "signed_flow_15": "volume",
    # volatility
    "rv_5": "volatility",
    "rv_10": "volatility",
    "rv_15": "volatility",
    "rv_30": "volatility",
    "rv_day": "volatility",
    "parkinson_15": "volatility",
    "range_30": "volatility",
    "vol_of_vol_30": "volatility",
    "vol_ratio_5_30": "volatility",
    "abs_ret_1": "volatility",
    # microstructure
    "spread_bps": "microstructure",
    "spread_vs_ma30": "microstructure",
    "log_bid_size": "microstructure",
    "log_ask_size": "microstructure",
    "log_depth": "microstructure",
    "imbalance": "microstructure",
    "imbalance_ma5": "microstructure",
    "imbalance_ma15": "microstructure",
    "imbalance_ma30": "microstructure",
    "imbalance_chg": "microstructure",
    "ofi_5": "microstructure",
    "bid_move": "microstructure",
    "ask_move": "microstructure",
    "quote_age": "microstructure",
    # technical
    "rsi_14": "technical",
    "macd": "technical",
    "macd_signal": "technical",
    "macd_hist": "technical",
    "bb_pctb_20": "technical",
    "bb_width_20": "technical",
    "stoch_k_14": "technical",
    "zscore_30": "technical",
    "tod_frac": "technical",
    "tod_sin": "technical",
    "tod_cos": "technical",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_GROUPS)

#: what a feature that is still null / NaN / inf after computation becomes (0 if not listed)
NEUTRAL: dict[str, float] = {
    "minutes_since_trade": 60.0,
    "quote_age": float(MAX_QUOTE_AGE + 1),
    "rsi_14": 50.0,
    "bb_pctb_20": 0.5,
    "stoch_k_14": 0.5,
    "no_trade": 1.0,
}

_QUOTE = ("bid", "ask", "bid_size", "ask_size")
_TRADE_PRICES = ("open", "high", "low", "close", "vwap")
_REQUIRED = ("symbol", "ts", *_QUOTE, "open", "high", "low", "close", "volume")
_OPTIONAL = ("trade_count", "vwap")
_MINUTE_US = 60_000_000
#: added to both realized vols in vol_ratio_5_30 so that a quiet stretch is a finite ratio
_VOL_EPS = 1e-6
#: rolling std below this fraction of the level is rounding noise, treated as zero
_REL_STD_FLOOR = 1e-9
_FIX = "see docs/data.md for the raw schema and fix the writer"

# the counts every DayFeatures carries, in pipeline order (docs/features.md, "Cleaning rules")
COUNT_KEYS = (
    "rows_in",
    "null_key",
    "extended_hours",
    "off_minute",
    "unlisted_symbol",
    "duplicate_rows",
    "rows_used",
    "quote_null",
    "quote_nonfinite",
    "quote_nonpositive",
    "quote_crossed",
    "trade_invalid",
    "missing_minutes",
    "masked_out",
)


def neutral(name: str) -> float:
    return NEUTRAL.get(name, 0.0)


# ---------------------------------------------------------------------------------------
# cleaning: raw rows -> one clean row per (sid, tid) in the regular session


def _check_columns(raw: pl.DataFrame, source: str) -> None:
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise DataError(f"{source}: required column(s) {missing} missing; the frame has {raw.columns}; {_FIX}")
    for name in (*_REQUIRED, *_OPTIONAL):
        if name not in raw.columns:
            continue
        dtype = raw.schema[name]
        if name == "symbol":
            ok = dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
        elif name == "ts":
            ok = isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
        else:
            ok = dtype.is_numeric() or dtype == pl.Null
        if not ok:
            want = {"symbol": "string", "ts": "timestamp[us, UTC] (time-zone aware)"}.get(name, "a numeric type")
            raise DataError(f"{source}: column {name!r} has type {dtype}, expected {want}; {_FIX}")


def _finite(col: str) -> pl.Expr:
    return pl.col(col).is_finite().fill_null(False)


def _clean(
    raw: pl.DataFrame, day: dt.date, symbols: list[str] | None, source: str
) -> tuple[pl.DataFrame, list[str], int, dict[str, int]]:
    """Apply the cleaning rules; return rows keyed by (sid, tid), the symbols, M and the counts."""
    if not is_trading_day(day):
        raise DataError(f"{source}: {day} is not a trading day (weekend or NYSE holiday); drop that date's data")
    _check_columns(raw, source)
    start, end = session_bounds(day)
    start_us = int(start.timestamp()) * 1_000_000
    n_minutes = int((end - start).total_seconds()) // 60
    counts = dict.fromkeys(COUNT_KEYS, 0)
    counts["rows_in"] = raw.height

    offset = pl.col("ts").dt.epoch("us") - start_us
    frame = raw.select(
        pl.col("symbol").cast(pl.String),
        offset.alias("_off"),
        *[pl.col(c).cast(pl.Float64) for c in (*_QUOTE, "open", "high", "low", "close", "volume")],
        *[
            (pl.col(c) if c in raw.columns else pl.lit(None)).cast(pl.Float64).alias(c)
            for c in _OPTIONAL
        ],
    )
    null_key = pl.col("symbol").is_null() | pl.col("_off").is_null()
    outside = ~null_key & ((pl.col("_off") < 0) | (pl.col("_off") >= n_minutes * _MINUTE_US))
    off_minute = ~null_key & ~outside & (pl.col("_off") % _MINUTE_US != 0)
    row_counts = frame.select(
        null_key.sum().alias("null_key"), outside.sum().alias("extended_hours"), off_minute.sum().alias("off_minute")
    ).row(0, named=True)
    counts.update({k: int(v) for k, v in row_counts.items()})
    frame = frame.filter(~(null_key | outside | off_minute))

    if symbols is None:
        symbols = sorted(frame.get_column("symbol").unique().to_list())
        if not symbols:
            raise NoDataError(
                f"{source}: no rows in the regular session of {day} ({counts['rows_in']} rows in all, "
                f"{counts['extended_hours']} outside the session); check the partition's dates and time zone"
            )
    else:
        symbols = list(symbols)
        if len(set(symbols)) != len(symbols):
            dup = sorted({s for s in symbols if symbols.count(s) > 1})
            raise UsageError(f"symbols lists {dup} more than once; pass each symbol once")
    table = pl.DataFrame({"symbol": symbols, "sid": np.arange(len(symbols), dtype=np.int32)},
                         schema={"symbol": pl.String, "sid": pl.Int32})
    before = frame.height
    frame = frame.join(table, on="symbol", how="inner").drop("symbol")
    counts["unlisted_symbol"] = before - frame.height

    frame = frame.with_columns((pl.col("_off") // _MINUTE_US).cast(pl.Int32).alias("tid")).drop("_off")
    if frame.select(pl.struct("sid", "tid").is_duplicated().any()).item():
        unique = frame.unique()
        conflict = unique.filter(pl.struct("sid", "tid").is_duplicated())
        if conflict.height:
            sid, tid = conflict.select("sid", "tid").row(0)
            when = dt.datetime.fromtimestamp((start_us + tid * _MINUTE_US) / 1e6, dt.timezone.utc)
            raise DataError(
                f"{source}: {conflict.height} rows share a (symbol, ts) with different values, e.g. "
                f"symbol={symbols[sid]!r} ts={when.isoformat()}; keep one row per symbol and minute"
            )
        counts["duplicate_rows"] = frame.height - unique.height
        frame = unique
    counts["rows_used"] = frame.height

    quote_null = pl.any_horizontal(*[pl.col(c).is_null() for c in _QUOTE])
    quote_nonfinite = ~quote_null & ~pl.all_horizontal(*[_finite(c) for c in _QUOTE])
    quote_nonpositive = (
        ~quote_null & ~quote_nonfinite
        & ((pl.col("bid") <= 0) | (pl.col("ask") <= 0) | (pl.col("bid_size") < 0) | (pl.col("ask_size") < 0))
    )
    quote_crossed = ~quote_null & ~quote_nonfinite & ~quote_nonpositive & (pl.col("bid") > pl.col("ask"))
    bad_price = [pl.col(c).is_not_null() & ~(_finite(c) & (pl.col(c) > 0)) for c in _TRADE_PRICES]
    bad_volume = ~(_finite("volume") & (pl.col("volume") >= 0))
    bad_count = pl.col("trade_count").is_not_null() & ~(_finite("trade_count") & (pl.col("trade_count") >= 0))
    frame = frame.with_columns(
        quote_null.alias("_qn"), quote_nonfinite.alias("_qf"), quote_nonpositive.alias("_qp"),
        quote_crossed.alias("_qc"), pl.any_horizontal(*bad_price, bad_volume, bad_count).alias("_ti"),
    )
    flags = frame.select(pl.col("_qn", "_qf", "_qp", "_qc", "_ti").sum()).row(0)
    for key, value in zip(("quote_null", "quote_nonfinite", "quote_nonpositive", "quote_crossed", "trade_invalid"), flags):
        counts[key] = int(value)
    unusable = pl.col("_qn") | pl.col("_qf") | pl.col("_qp") | pl.col("_qc")
    frame = frame.select(
        "sid",
        "tid",
        *[pl.when(unusable).then(None).otherwise(pl.col(c)).alias(c) for c in _QUOTE],
        *[pl.when(_finite(c) & (pl.col(c) > 0)).then(pl.col(c)).alias(c) for c in _TRADE_PRICES],
        pl.when(_finite("volume") & (pl.col("volume") >= 0)).then(pl.col("volume")).otherwise(0.0).alias("volume"),
        pl.when(_finite("trade_count") & (pl.col("trade_count") >= 0)).then(pl.col("trade_count")).alias("trade_count"),
    )
    return frame, symbols, n_minutes, counts


# ---------------------------------------------------------------------------------------
# expressions on the dense grid (rows ordered by sid, then tid; one day only)


def _o(expr: pl.Expr) -> pl.Expr:
    return expr.over("sid")


def _lag(expr: pl.Expr, k: int) -> pl.Expr:
    """``expr`` k minutes earlier in the same symbol: a plain shift is exact on the dense grid."""
    return pl.when(pl.col("tid") >= k).then(expr.shift(k))


def _rmean(expr: pl.Expr, k: int) -> pl.Expr:
    return _o(expr.rolling_mean(k, min_samples=1))


def _rsqrt(squares: pl.Expr, k: int) -> pl.Expr:
    """Root of a rolling mean of squares; clipped at 0 because polars' running sums can end a
    little below zero (e.g. -3e-22) after a stretch of zeros, and the root would be NaN."""
    return _rmean(squares, k).clip(lower_bound=0).sqrt()


def _rstd(expr: pl.Expr, k: int) -> pl.Expr:
    return _o(expr.rolling_std(k, min_samples=2))


def _std_floor(sd: pl.Expr, level: pl.Expr) -> pl.Expr:
    return pl.when(sd > _REL_STD_FLOOR * level.abs()).then(sd)


def _ffill_in_symbol(expr: pl.Expr) -> pl.Expr:
    """Forward fill of ``expr`` within the symbol.

    A plain forward fill over the whole grid, kept only where the row it came from is in
    the same symbol (``_row`` is the grid row, ``sid * M + tid``): exact, and far cheaper
    than ``over``.
    """
    last = pl.when(expr.is_not_null()).then(pl.col("_row")).forward_fill()
    return pl.when(pl.col("_row") - last <= pl.col("tid")).then(expr.forward_fill())


def base_exprs() -> list[list[pl.Expr]]:
    """Stages of intermediate columns, each stage using only earlier ones."""
    col = pl.col
    traded = col("volume") > 0
    return [
        [
            _ffill_in_symbol(pl.when(col("bid").is_not_null()).then(col("_row"))).alias("_last_quote"),
            _ffill_in_symbol(pl.when(traded).then(col("_row"))).alias("_last_trade"),
            _ffill_in_symbol(pl.when(traded).then(col("close"))).alias("_last_px"),
            *[_ffill_in_symbol(col(c)).alias(c) for c in _QUOTE],
        ],
        [
            (col("_row") - col("_last_quote")).alias("_age"),
            ((col("bid") + col("ask")) / 2).alias("_mid"),
            (col("bid_size") + col("ask_size")).alias("_depth"),
            pl.coalesce(col("vwap"), col("close"), (col("bid") + col("ask")) / 2).alias("_px"),
            col("volume").log1p().alias("_lvol"),
        ],
        [
            (col("_age") <= MAX_QUOTE_AGE).fill_null(False).alias("_mask"),
            col("_mid").log().alias("_lm"),
            ((col("bid_size") - col("ask_size")) / col("_depth")).fill_nan(0.0).alias("_imb"),
            ((col("ask") - col("bid")) / col("_mid") * 1e4).alias("_spread"),
            pl.when(traded & col("_px").is_not_null()).then(col("_px") * col("volume")).otherwise(0.0).alias("_pv"),
            pl.when(traded & col("_px").is_not_null()).then(col("volume")).otherwise(0.0).alias("_vpx"),
            _ofi().alias("_ofi"),
        ],
        [
            (col("_lm") - _lag(col("_lm"), 1)).alias("_r"),
            _o(col("_pv").cum_sum()).alias("_cum_pv"),
            _o(col("_vpx").cum_sum()).alias("_cum_vpx"),
            _o(col("volume").cum_sum()).alias("_cum_vol"),
            _o(col("_mid").ewm_mean(span=12, adjust=False)).alias("_ema12"),
            _o(col("_mid").ewm_mean(span=26, adjust=False)).alias("_ema26"),
        ],
        [
            (col("_r") ** 2).alias("_r2"),
            ((col("_ema12") / col("_ema26")).log() * 1e4).alias("_macd"),
            _o(col("_r").clip(lower_bound=0).ewm_mean(alpha=1 / 14, adjust=False)).alias("_gain"),
            _o((-col("_r")).clip(lower_bound=0).ewm_mean(alpha=1 / 14, adjust=False)).alias("_loss"),
        ],
        [
            _o(col("_macd").ewm_mean(span=9, adjust=False)).alias("_macd_signal"),
            _rsqrt(col("_r2"), 5).alias("_rv5"),
            _rsqrt(col("_r2"), 30).alias("_rv30"),
        ],
    ]


def _ofi() -> pl.Expr:
    """Cont-Kukanov-Stoikov order-flow imbalance of the minute, in shares."""
    bid, ask, bs, as_ = (pl.col(c) for c in _QUOTE)
    pbid, pask, pbs, pas = (_lag(pl.col(c), 1) for c in _QUOTE)
    return (
        pl.when(bid >= pbid).then(bs).otherwise(0.0)
        - pl.when(bid <= pbid).then(pbs).otherwise(0.0)
        - pl.when(ask <= pask).then(as_).otherwise(0.0)
        + pl.when(ask >= pask).then(pas).otherwise(0.0)
    )


def feature_exprs(n_minutes: int) -> list[pl.Expr]:
    """The FEATURE_NAMES columns, in order, from the ``base_exprs`` columns (docs/features.md)."""
    col = pl.col
    lm, mid, r = col("_lm"), col("_mid"), col("_r")
    lvol, vol = col("_lvol"), col("volume")
    imb, spread = col("_imb"), col("_spread")
    sd20, ma20 = _rstd(mid, 20), _rmean(mid, 20)
    sd30, ma30 = _rstd(mid, 30), _rmean(mid, 30)
    hi14, lo14 = _o(mid.rolling_max(14, min_samples=1)), _o(mid.rolling_min(14, min_samples=1))
    hi30, lo30 = _o(mid.rolling_max(30, min_samples=1)), _o(mid.rolling_min(30, min_samples=1))
    hl = pl.when(col("high").is_not_null() & col("low").is_not_null()).then(
        (col("high") / col("low")).log() ** 2 / (4 * math.log(2))
    )
    day_open = _o(lm.drop_nulls().first())
    phase = col("tid") / n_minutes
    exprs = {
        "ret_1": r,
        "ret_5": lm - _lag(lm, 5),
        "ret_15": lm - _lag(lm, 15),
        "ret_30": lm - _lag(lm, 30),
        "ret_open": lm - day_open,
        "mid_vs_ma5": lm - _rmean(mid, 5).log(),
        "mid_vs_ma15": lm - _rmean(mid, 15).log(),
        "mid_vs_ma30": lm - ma30.log(),
        "dist_high_30": lm - hi30.log(),
        "dist_low_30": lm - lo30.log(),
        "microprice_dev": (
            (col("bid") * col("ask_size") + col("ask") * col("bid_size")) / col("_depth") / mid - 1
        ) * 1e4,
        "trade_vs_mid": (col("_last_px") / mid).log() * 1e4,
        "mid_vs_vwap": (mid / (col("_cum_pv") / col("_cum_vpx"))).log() * 1e4,
        "log_volume": lvol,
        "volume_rel_5": lvol - _rmean(vol, 5).log1p(),
        "volume_rel_15": lvol - _rmean(vol, 15).log1p(),
        "volume_rel_30": lvol - _rmean(vol, 30).log1p(),
        "log_trade_count": col("trade_count").log1p(),
        "log_dollar_volume": (col("_px") * vol).log1p(),
        "log_cum_volume": col("_cum_vol").log1p(),
        "volume_share": vol / col("_cum_vol"),
        "no_trade": (vol <= 0).cast(pl.Float64),
        "minutes_since_trade": (col("_row") - col("_last_trade")).clip(upper_bound=60),
        "signed_flow_15": _rmean((col("close") - _lag(mid, 1)).sign().fill_null(0.0) * lvol, 15),
        "rv_5": col("_rv5"),
        "rv_10": _rsqrt(col("_r2"), 10),
        "rv_15": _rsqrt(col("_r2"), 15),
        "rv_30": col("_rv30"),
        "rv_day": (_o(col("_r2").cum_sum()) / _o(col("_r2").cum_count())).sqrt(),
        "parkinson_15": _rsqrt(hl, 15),
        "range_30": (hi30 / lo30).log(),
        "vol_of_vol_30": _rstd(col("_rv5"), 30),
        "vol_ratio_5_30": ((col("_rv5") + _VOL_EPS) / (col("_rv30") + _VOL_EPS)).log(),
        "abs_ret_1": r.abs(),
        "spread_bps": spread,
        "spread_vs_ma30": spread - _rmean(spread, 30),
        "log_bid_size": col("bid_size").log1p(),
        "log_ask_size": col("ask_size").log1p(),
        "log_depth": col("_depth").log1p(),
        "imbalance": imb,
        "imbalance_ma5": _rmean(imb, 5),
        "imbalance_ma15": _rmean(imb, 15),
        "imbalance_ma30": _rmean(imb, 30),
        "imbalance_chg": imb - _lag(imb, 1),
        "ofi_5": _o(col("_ofi").rolling_sum(5, min_samples=1)) / _rmean(col("_depth"), 5),
        "bid_move": (col("bid") - _lag(col("bid"), 1)).sign(),
        "ask_move": (col("ask") - _lag(col("ask"), 1)).sign(),
        "quote_age": col("_age").clip(upper_bound=MAX_QUOTE_AGE + 1),
        "rsi_14": 100 * col("_gain") / (col("_gain") + col("_loss")),
        "macd": col("_macd"),
        "macd_signal": col("_macd_signal"),
        "macd_hist": col("_macd") - col("_macd_signal"),
        "bb_pctb_20": (mid - ma20 + 2 * sd20) / (4 * _std_floor(sd20, ma20)),
        "bb_width_20": 4 * sd20 / ma20,
        "stoch_k_14": (mid - lo14) / (hi14 - lo14),
        "zscore_30": (mid - ma30) / _std_floor(sd30, ma30),
        "tod_frac": phase,
        "tod_sin": (2 * math.pi * phase).sin(),
        "tod_cos": (2 * math.pi * phase).cos(),
    }
    assert tuple(exprs) == FEATURE_NAMES
    return [_finalize(expr, name) for name, expr in exprs.items()]


def _finalize(expr: pl.Expr, name: str) -> pl.Expr:
    """Missing-value policy: float32, and anything null / NaN / inf becomes the neutral value."""
    x = expr.cast(pl.Float32)
    return pl.when(x.is_finite()).then(x).otherwise(pl.lit(neutral(name), pl.Float32)).alias(name)


def label_exprs(n_minutes: int) -> list[pl.Expr]:
    """``ret_1h`` and ``vol_10m`` (docs/features.md, "Labels"); null where unavailable.

    Rows are one day's grid ordered by (sid, tid), so a plain shift by ``-k`` stays within
    the symbol wherever ``tid + k < n_minutes``, the only rows where a label exists.
    """
    col = pl.col
    mask, lm, r2 = col("_mask"), col("_lm"), col("_r2")
    ret_ok = (col("tid") + RET_HORIZON < n_minutes) & mask & mask.shift(-RET_HORIZON)
    vol_ok = (col("tid") + VOL_HORIZON < n_minutes) & pl.all_horizontal(mask.shift(-k) for k in range(VOL_HORIZON + 1))
    vol_sum = pl.sum_horizontal(r2.shift(-k) for k in range(1, VOL_HORIZON + 1))
    return [
        pl.when(ret_ok).then(lm.shift(-RET_HORIZON) - lm).cast(pl.Float32).alias("ret_1h"),
        pl.when(vol_ok).then(vol_sum.sqrt()).cast(pl.Float32).alias("vol_10m"),
    ]


# ---------------------------------------------------------------------------------------


def _grid(rows: pl.DataFrame, n_sym: int, n_minutes: int) -> pl.DataFrame:
    """The dense (sid, tid) grid, ordered by sid then tid, with each clean row in its cell.

    A scatter by grid row: cleaned columns hold no NaN (non-finite values became null), so
    NaN marks an empty cell and turns back into null.
    """
    n = n_sym * n_minutes
    at = (rows.get_column("sid").to_numpy().astype(np.int64) * n_minutes + rows.get_column("tid").to_numpy())
    columns: dict[str, pl.Series] = {
        "_row": pl.Series("_row", np.arange(n, dtype=np.int64)),
        "sid": pl.Series("sid", np.repeat(np.arange(n_sym, dtype=np.int32), n_minutes)),
        "tid": pl.Series("tid", np.tile(np.arange(n_minutes, dtype=np.int32), n_sym)),
    }
    for name in rows.columns:
        if name in ("sid", "tid"):
            continue
        cell = np.full(n, np.nan)
        cell[at] = rows.get_column(name).to_numpy()
        columns[name] = pl.Series(name, cell, nan_to_null=True)
    columns["volume"] = columns["volume"].fill_null(0.0)
    return pl.DataFrame(list(columns.values()))


def build_day(
    raw: pl.DataFrame, day: dt.date, *, symbols: list[str] | None = None, source: str = ""
) -> DayFeatures:
    """Features, mask and labels of ``day`` from its raw rows (any order, any extra rows).

    ``symbols`` fixes the grid's symbols and their order (absent ones are all-missing,
    rows of unlisted ones are dropped and counted); by default every symbol with a row in
    the regular session, sorted. ``source`` names the data in error messages.
    """
    source = source or f"raw data of {day}"
    rows, symbols, n_minutes, counts = _clean(raw, day, symbols, source)
    n_sym = len(symbols)
    lazy = _grid(rows, n_sym, n_minutes).lazy()
    for stage in base_exprs():
        lazy = lazy.with_columns(stage)
    out = lazy.select("_mask", *label_exprs(n_minutes), *feature_exprs(n_minutes)).collect()
    counts["missing_minutes"] = n_sym * n_minutes - counts["rows_used"]
    mask = out.get_column("_mask").to_numpy().reshape(n_sym, n_minutes)
    counts["masked_out"] = int(mask.size - mask.sum())
    # polars' column-major export, reshaped as a view, then one C-order copy below: faster
    # than polars' row-major export
    labels = out.select("ret_1h", "vol_10m").to_numpy().reshape(n_sym, n_minutes, 2)
    features = out.select(FEATURE_NAMES).to_numpy().reshape(n_sym, n_minutes, len(FEATURE_NAMES))
    return DayFeatures(
        date=day,
        symbols=symbols,
        minutes=session_minutes(day),
        feature_names=list(FEATURE_NAMES),
        features=np.ascontiguousarray(features, dtype=np.float32),
        mask=np.ascontiguousarray(mask, dtype=np.bool_),
        labels=np.ascontiguousarray(labels, dtype=np.float32),
        counts=counts,
    )

"""Raw minutely BBO bars of one day -> the dense feature grid, mask and labels.

The same code builds the training days and the inference days, so features cannot drift
between the two. Every feature at minute ``t`` is a function of the day's rows at or before
``t`` only (forward fills, shifts, trailing rolling windows, expanding day statistics,
recursive EMAs), so a real-time engine that sees the day's history up to ``t`` computes
the same values bit for bit. docs/features.md is the reference for every definition, the
cleaning rules, the missing-value policy, the mask and the labels.

Two stages: polars cleans the raw rows (``clean_rows``: session filter, rules, counts,
duplicates); numpy computes the features on the dense time-major grid (``grid_arrays``,
``compute_grid``). Every symbol has every minute, so per-symbol windows are plain array
shifts vectorized across symbols, faster than polars' per-symbol ``over``
windows, and ``compute_grid`` can compute only the latest minutes with the full-day bits,
which is what the real-time engine (engine/realtime.py) calls.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from tthf.engine.data.calendar import is_trading_day, session_bounds, session_minutes
from tthf.engine.config import RET_HORIZON, VOL_HORIZON
from tthf.engine.features.day import DayFeatures
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
#: the clean grid's value columns (``grid_arrays``), the input of ``compute_grid``
GRID_COLUMNS = (*_QUOTE, *_TRADE_PRICES, "volume", "trade_count")
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
    "symbols_no_quote",
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


def clean_rows(
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

    given = symbols is not None
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
    before = frame.height
    if given:
        frame = frame.filter(pl.col("symbol").is_in(symbols))
    counts["unlisted_symbol"] = before - frame.height
    # the symbol's position in ``symbols``: an Enum's physical code (cheaper than a join on strings)
    frame = frame.with_columns(
        pl.col("symbol").cast(pl.Enum(symbols)).to_physical().cast(pl.Int32).alias("sid"),
        (pl.col("_off") // _MINUTE_US).cast(pl.Int32).alias("tid"),
    ).drop("symbol", "_off")
    cell = frame.get_column("sid").to_numpy().astype(np.int64) * n_minutes + frame.get_column("tid").to_numpy()
    if len(cell) and np.bincount(cell).max() > 1:
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
    # a symbol without one usable quote all day is all masked: it gets no rows, the date is fine
    counts["symbols_no_quote"] = len(symbols) - frame.select(pl.col("sid").filter(~unusable).n_unique()).item()
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
# numpy on the dense grid, time-major: (minutes, symbols) arrays, NaN is "missing".
# Time-major makes a lag a contiguous block of rows and a day-to-date sum a row-wise
# cumulative sum vectorized across symbols, which measured faster than (symbols, minutes).


def _shift(x: np.ndarray, k: int, fill: float = np.nan) -> np.ndarray:
    """``x`` k minutes earlier in the same symbol (``fill`` before the open)."""
    out = np.empty_like(x)
    out[:k] = fill
    out[k:] = x[: len(x) - k]
    return out


def _take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[idx[t, s], s]``, NaN where ``idx`` is -1."""
    flat = np.maximum(idx, 0) * x.shape[1] + np.arange(x.shape[1])
    out = np.take(x, flat)
    out[idx < 0] = np.nan
    return out


def _add_earlier(out: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """``out += x`` k minutes earlier, in place (nothing is added before the open)."""
    out[k:] += x[: len(x) - k]
    return out


class _Windows:
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
            levels.append(_add_earlier(levels[-1].copy(), levels[-1], span))
        out, done = None, 0
        for bit in range(len(levels) - 1, -1, -1):
            if k & (1 << bit):
                out = levels[bit].copy() if out is None else _add_earlier(out, levels[bit], done)
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


def _rextreme(x: np.ndarray, k: int, fn: np.ufunc) -> np.ndarray:
    """Trailing k-minute max (``np.fmax``) or min (``np.fmin``) ignoring NaN, by doubling."""
    span, cur = 1, x
    while span * 2 <= k:
        cur = fn(cur, _shift(cur, span))
        span *= 2
    return cur if span == k else fn(cur, _shift(cur, k - span))


def _after(x: np.ndarray, carry: np.ndarray | None) -> np.ndarray:
    """``x`` one minute earlier, the first row taken from ``carry`` (the minute before ``x``'s rows; None: missing)."""
    out = np.empty_like(x)
    out[0] = np.nan if carry is None else carry
    out[1:] = x[:-1]
    return out


def _cumsum(x: np.ndarray, carry: np.ndarray | None) -> np.ndarray:
    """Running sum down the day, resumed from ``carry`` (the sum at the minute before ``x``'s rows).

    Resuming adds ``carry + x_0`` first, then the rest in order: the bits of a sum from the open.
    """
    if carry is None:
        return np.cumsum(x, axis=0)
    return np.cumsum(np.concatenate([carry[None], x]), axis=0)[1:]


def _ewm(x: np.ndarray, t: np.ndarray, alpha: float, prev: np.ndarray | None, carry: np.ndarray | None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Recursive EMA ``y_t = (1 - alpha) y_{t-1} + alpha x_t`` seeded with the symbol's first value.

    ``x`` may only be missing before its first value (true of every input here). Closed form
    ``y_t = q^t (q^-t0 x_t0 + alpha sum_{t0<j<=t} q^-j x_j)``, ``q = 1 - alpha``: one running
    sum, resumable like the others (``prev``: ``x`` at the minute before, ``carry``: the sum
    there); the weights stay far below float64's range for 390 minutes. Returns y and the sum.
    """
    q = 1.0 - alpha
    valid = ~np.isnan(x)
    first = valid & np.isnan(_after(x, prev))
    weight = np.where(first, 1.0, alpha) * q ** (-t)
    total = _cumsum(np.where(valid, x * weight, 0.0), carry)
    y = total * q**t
    y[~valid] = np.nan
    return y, total


#: minutes of history the windowed features at a minute read, at most (vol_of_vol_30: a 30-minute
#: std of rv_5, itself 5 minutes of returns); the real-time tail computes from this far back
LOOKBACK = 40

#: DayState's arrays: forward-fill minutes (int64) and running statistics (float64)
_STATE_INT = ("last_quote", "last_trade", "last_px_at", "first_quote")
_STATE_FLOAT = ("mid", "lm", "r", "cum_pv", "cum_vpx", "cum_vol", "sum_r2", "n_r2",
                "s_ema12", "s_ema26", "s_gain", "s_loss", "s_signal", "macd", "gain", "loss", "macd_signal")
_NEVER = np.iinfo(np.int64).max  # first_quote of a symbol without a quote yet


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
            self._compute(g, c, w)
        self.rows = w

    def _compute(self, g: dict[str, np.ndarray], c: int, w: int) -> None:
        st = self.arrays
        before = (lambda name: st[name][c - 1]) if c > 0 else (lambda name: None)  # noqa: E731
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
        first = np.minimum.accumulate(np.where(quoted, minute, _NEVER), axis=0)
        if c > 0:
            np.minimum(first, st["first_quote"][c - 1], out=first)
        st["first_quote"][c:w] = first
        mid = (_take(g["bid"], last_quote) + _take(g["ask"], last_quote)) / 2
        lm = np.log(mid)
        r = lm - _after(lm, before("lm"))
        px = np.where(~np.isnan(vwap), vwap, np.where(~np.isnan(close), close, mid))
        px_ok = traded & ~np.isnan(px)
        st["cum_pv"][c:w] = _cumsum(np.where(px_ok, px * volume, 0.0), before("cum_pv"))
        st["cum_vpx"][c:w] = _cumsum(np.where(px_ok, volume, 0.0), before("cum_vpx"))
        st["cum_vol"][c:w] = _cumsum(volume, before("cum_vol"))
        r2 = r * r
        r2_valid = ~np.isnan(r2)
        st["sum_r2"][c:w] = _cumsum(np.where(r2_valid, r2, 0.0), before("sum_r2"))
        st["n_r2"][c:w] = _cumsum(r2_valid.astype(np.float64), before("n_r2"))
        ema12, st["s_ema12"][c:w] = _ewm(mid, t, 2 / 13, before("mid"), before("s_ema12"))
        ema26, st["s_ema26"][c:w] = _ewm(mid, t, 2 / 27, before("mid"), before("s_ema26"))
        macd = np.log(ema12 / ema26) * 1e4
        st["gain"][c:w], st["s_gain"][c:w] = _ewm(np.maximum(r, 0.0), t, 1 / 14, before("r"), before("s_gain"))
        st["loss"][c:w], st["s_loss"][c:w] = _ewm(np.maximum(-r, 0.0), t, 1 / 14, before("r"), before("s_loss"))
        st["macd_signal"][c:w], st["s_signal"][c:w] = _ewm(macd, t, 2 / 10, before("macd"), before("s_signal"))
        st["mid"][c:w], st["lm"][c:w], st["r"][c:w], st["macd"][c:w] = mid, lm, r, macd


def compute_grid(
    g: dict[str, np.ndarray], n_minutes: int, start: int = 0, *, state: DayState | None = None,
    labels: bool = True, out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features (S, W-start, F) float32, mask (S, W) and labels (S, W, 2) of the grid ``g``.

    ``g`` holds (W, S) float64 arrays of the clean rows (``grid_arrays``); ``W`` may be less
    than the session length ``n_minutes`` (the day so far). Features are returned for the
    minutes ``start..W-1`` only, bit for bit equal to those of the whole grid: the day
    statistics come from ``state`` (brought up to date here; a fresh one if None), the
    windowed ones are computed over the last ``W - start + LOOKBACK`` minutes only. That is
    what makes the real-time update cheap. ``labels=False`` skips the labels (None); ``out``
receives the features instead of a new array.
    docs/features.md defines every value.
    """
    with np.errstate(all="ignore"):  # NaN and inf are expected; the missing-value policy handles them
        state = state or DayState()
        state.update(g, n_minutes)
        return _compute(g, n_minutes, start, state.arrays, labels, out)


def _compute(g: dict[str, np.ndarray], n_minutes: int, start: int, st: dict[str, np.ndarray], want_labels: bool,
             out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    m, n_sym = g["bid"].shape
    t_all = np.arange(m, dtype=np.float64)[:, None]
    last_quote = st["last_quote"][:m]
    age = np.where(last_quote >= 0, t_all - last_quote, np.nan)
    mask = age <= MAX_QUOTE_AGE
    labels = None
    if want_labels:
        r = st["r"][:m]
        labels = _labels(mask, st["lm"][:m], r * r, n_minutes)

    # windowed and pointwise features: from LOOKBACK minutes before ``start`` on
    lo = max(0, start - LOOKBACK)
    cut = lambda x: x[lo:m]  # noqa: E731
    t = t_all[lo:]
    volume, close, vwap, high, low = (cut(g[c]) for c in ("volume", "close", "vwap", "high", "low"))
    bid, ask, bs, as_ = (_take(g[c], cut(last_quote)) for c in _QUOTE)
    mid, lm, r = cut(st["mid"]), cut(st["lm"]), cut(st["r"])
    r2 = r * r
    px = np.where(~np.isnan(vwap), vwap, np.where(~np.isnan(close), close, mid))
    last_trade = cut(st["last_trade"])
    last_px = _take(g["close"], cut(st["last_px_at"]))
    first = cut(st["first_quote"])
    lm_open = _take(st["lm"], np.where(first == _NEVER, -1, first))
    cum_pv, cum_vpx, cum_vol = cut(st["cum_pv"]), cut(st["cum_vpx"]), cut(st["cum_vol"])
    n_r2 = cut(st["n_r2"])
    rv_day = np.where(np.isnan(r2), np.nan, np.sqrt(cut(st["sum_r2"]) / n_r2))
    gain, loss, macd, macd_signal = cut(st["gain"]), cut(st["loss"]), cut(st["macd"]), cut(st["macd_signal"])
    depth = bs + as_
    lvol = np.log1p(volume)
    imb = np.where(depth == 0, 0.0, (bs - as_) / depth)
    spread = (ask - bid) / mid * 1e4
    pbid, pask, pbs, pas = (_shift(x, 1) for x in (bid, ask, bs, as_))
    ofi = (  # NaN comparisons are False: no quote yet or no previous minute adds nothing
        np.where(bid >= pbid, bs, 0.0) - np.where(bid <= pbid, pbs, 0.0)
        - np.where(ask <= pask, as_, 0.0) + np.where(ask >= pask, pas, 0.0)
    )
    w_mid, w_r2, w_vol, w_imb = _Windows(mid), _Windows(r2), _Windows(volume), _Windows(imb)
    rv5, rv30 = w_r2.root_mean(5), w_r2.root_mean(30)
    sd20, ma20 = w_mid.std(20)
    sd30, ma30 = w_mid.std(30)
    hi14, lo14 = _rextreme(mid, 14, np.fmax), _rextreme(mid, 14, np.fmin)
    hi30, lo30 = _rextreme(mid, 30, np.fmax), _rextreme(mid, 30, np.fmin)
    hl = np.log(high / low) ** 2 / (4 * math.log(2))
    signed = np.nan_to_num(np.sign(close - _shift(mid, 1)), nan=0.0) * lvol
    phase = t / n_minutes
    floor = lambda sd, level: np.where(sd > _REL_STD_FLOOR * np.abs(level), sd, np.nan)  # noqa: E731
    values = {
        "ret_1": r,
        "ret_5": lm - _shift(lm, 5),
        "ret_15": lm - _shift(lm, 15),
        "ret_30": lm - _shift(lm, 30),
        "ret_open": lm - lm_open,
        "mid_vs_ma5": lm - np.log(w_mid.mean(5)),
        "mid_vs_ma15": lm - np.log(w_mid.mean(15)),
        "mid_vs_ma30": lm - np.log(ma30),
        "dist_high_30": lm - np.log(hi30),
        "dist_low_30": lm - np.log(lo30),
        "microprice_dev": ((bid * as_ + ask * bs) / depth / mid - 1) * 1e4,
        "trade_vs_mid": np.log(last_px / mid) * 1e4,
        "mid_vs_vwap": np.log(mid / (cum_pv / cum_vpx)) * 1e4,
        "log_volume": lvol,
        "volume_rel_5": lvol - np.log1p(w_vol.mean(5)),
        "volume_rel_15": lvol - np.log1p(w_vol.mean(15)),
        "volume_rel_30": lvol - np.log1p(w_vol.mean(30)),
        "log_trade_count": np.log1p(cut(g["trade_count"])),
        "log_dollar_volume": np.log1p(px * volume),
        "log_cum_volume": np.log1p(cum_vol),
        "volume_share": volume / cum_vol,
        "no_trade": (volume <= 0).astype(np.float64),
        "minutes_since_trade": np.minimum(np.where(last_trade >= 0, t - last_trade, np.nan), 60),
        "signed_flow_15": _Windows(signed).mean(15),
        "rv_5": rv5,
        "rv_10": w_r2.root_mean(10),
        "rv_15": w_r2.root_mean(15),
        "rv_30": rv30,
        "rv_day": rv_day,
        "parkinson_15": _Windows(hl).root_mean(15),
        "range_30": np.log(hi30 / lo30),
        "vol_of_vol_30": _Windows(rv5).std(30)[0],
        "vol_ratio_5_30": np.log((rv5 + _VOL_EPS) / (rv30 + _VOL_EPS)),
        "abs_ret_1": np.abs(r),
        "spread_bps": spread,
        "spread_vs_ma30": spread - _Windows(spread).mean(30),
        "log_bid_size": np.log1p(bs),
        "log_ask_size": np.log1p(as_),
        "log_depth": np.log1p(depth),
        "imbalance": imb,
        "imbalance_ma5": w_imb.mean(5),
        "imbalance_ma15": w_imb.mean(15),
        "imbalance_ma30": w_imb.mean(30),
        "imbalance_chg": imb - _shift(imb, 1),
        "ofi_5": _Windows(ofi).sum(5) / _Windows(depth).mean(5),
        "bid_move": np.sign(bid - pbid),
        "ask_move": np.sign(ask - pask),
        "quote_age": np.minimum(cut(age), MAX_QUOTE_AGE + 1),
        "rsi_14": 100 * gain / (gain + loss),
        "macd": macd,
        "macd_signal": macd_signal,
        "macd_hist": macd - macd_signal,
        "bb_pctb_20": (mid - ma20 + 2 * sd20) / (4 * floor(sd20, ma20)),
        "bb_width_20": 4 * sd20 / ma20,
        "stoch_k_14": (mid - lo14) / (hi14 - lo14),
        "zscore_30": (mid - ma30) / floor(sd30, ma30),
        "tod_frac": np.broadcast_to(phase, mid.shape),
        "tod_sin": np.broadcast_to(np.sin(2 * math.pi * phase), mid.shape),
        "tod_cos": np.broadcast_to(np.cos(2 * math.pi * phase), mid.shape),
    }
    assert tuple(values) == FEATURE_NAMES
    skip = start - lo
    features = np.empty((n_sym, m - start, len(FEATURE_NAMES)), dtype=np.float32) if out is None else out
    for i, (name, value) in enumerate(values.items()):
        x = value[skip:].astype(np.float32)  # the policy looks at the float32 value (overflow -> inf)
        x[~np.isfinite(x)] = neutral(name)
        features[:, :, i] = x.T
    return features, np.ascontiguousarray(mask.T), labels


def _labels(mask: np.ndarray, lm: np.ndarray, r2: np.ndarray, n_minutes: int) -> np.ndarray:
    """``ret_1h`` and ``vol_10m`` (docs/features.md, "Labels"); NaN where unavailable or beyond the grid."""
    m, n_sym = mask.shape
    labels = np.full((n_sym, m, 2), np.nan, dtype=np.float32)
    h = RET_HORIZON
    if m > h:
        ok = mask[: m - h] & mask[h:]
        labels[:, : m - h, 0] = np.where(ok, lm[h:] - lm[: m - h], np.nan).T
    h = VOL_HORIZON
    if m > h:
        ok = mask[: m - h].copy()
        total = np.zeros((m - h, n_sym))
        for k in range(1, h + 1):
            ok &= mask[k : m - h + k]
            total += r2[k : m - h + k]
        labels[:, : m - h, 1] = np.where(ok, np.sqrt(total), np.nan).T
    return labels


# ---------------------------------------------------------------------------------------


def grid_arrays(rows: pl.DataFrame, n_sym: int, n_minutes: int) -> dict[str, np.ndarray]:
    """The dense grid, (minutes, symbols) per column: each clean row's values in its cell, NaN elsewhere.

    Cleaned columns hold no NaN (non-finite values became null), so NaN marks a missing
    value; a minute without a row has volume 0.
    """
    at = rows.get_column("tid").to_numpy().astype(np.int64) * n_sym + rows.get_column("sid").to_numpy()
    columns: dict[str, np.ndarray] = {}
    for name in GRID_COLUMNS:
        cell = np.full(n_sym * n_minutes, np.nan)
        cell[at] = rows.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()
        columns[name] = cell.reshape(n_minutes, n_sym)
    columns["volume"] = np.nan_to_num(columns["volume"], nan=0.0)
    return columns


#: symbols per thread below which build_day stays on one thread
_MIN_BLOCK = 128


def _compute_in_threads(g: dict[str, np.ndarray], n_minutes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``compute_grid`` on blocks of symbols in parallel threads (numpy releases the GIL in its loops).

    Symbols never mix in any computation, so the blocks give the bits of one call.
    """
    n_sym = g["bid"].shape[1]
    n_blocks = max(1, min(len(os.sched_getaffinity(0)), n_sym // _MIN_BLOCK))
    if n_blocks == 1:
        features, mask, labels = compute_grid(g, n_minutes)
        assert labels is not None
        return features, mask, labels
    edges = np.linspace(0, n_sym, n_blocks + 1).astype(int)
    features = np.empty((n_sym, n_minutes, len(FEATURE_NAMES)), dtype=np.float32)

    def block(a: int, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        part = {name: np.ascontiguousarray(column[:, a:b]) for name, column in g.items()}
        return compute_grid(part, n_minutes, out=features[a:b])[1:]

    with ThreadPoolExecutor(n_blocks) as pool:
        parts = list(pool.map(block, edges[:-1], edges[1:]))
    return features, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])  # type: ignore[misc]


def build_day(
    raw: pl.DataFrame, day: dt.date, *, symbols: list[str] | None = None, source: str = ""
) -> DayFeatures:
    """Features, mask and labels of ``day`` from its raw rows (any order, any extra rows).

    ``symbols`` fixes the grid's symbols and their order (absent ones are all-missing,
    rows of unlisted ones are dropped and counted); by default every symbol with a row in
    the regular session, sorted. ``source`` names the data in error messages.
    """
    source = source or f"raw data of {day}"
    rows, symbols, n_minutes, counts = clean_rows(raw, day, symbols, source)
    n_sym = len(symbols)
    features, mask, labels = _compute_in_threads(grid_arrays(rows, n_sym, n_minutes), n_minutes)
    counts["missing_minutes"] = n_sym * n_minutes - counts["rows_used"]
    counts["masked_out"] = int(mask.size - mask.sum())
    return DayFeatures(
        date=day,
        symbols=symbols,
        minutes=session_minutes(day),
        feature_names=list(FEATURE_NAMES),
        features=features,
        mask=mask,
        labels=labels,
        counts=counts,
    )

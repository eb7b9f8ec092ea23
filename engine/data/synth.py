"""A synthetic minutely BBO feed with realistic mess and documented, learnable structure.

Real feeds cannot ship with the project and have no known ground truth, so this module
makes one: the raw schema of docs/data.md for N symbols over a date range, with the
defects a real feed has (missing minutes, quotes without trades, halts, crossed, zero
and stale quotes, extended hours, half days, thin and late-starting symbols) and two
planted effects a model can learn (docs/data.md, "Synthetic market"):

* volatility clusters within a day (GARCH(1,1) on minute returns) and across days (a
  persistent per-symbol daily volatility level), so recent realized volatility
  forecasts ``vol_10m`` better than a constant;
* a latent AR(1) signal per symbol drives a small drift of the efficient price and
  shows up, noisily, in the bid/ask size imbalance, so a model that reads imbalance
  beats the zero forecast of ``ret_1h``.

A day is a pure function of ``(seed, n_symbols, date)`` and the knobs: the persistent
daily state (volatility level, price level) is a fixed-length weighted sum of per-date
innovations ending at that date, so any sub-range, any single date, or dates generated
in parallel come out bit for bit identical. All work is vectorized over (symbols, minutes).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import polars as pl

from tthf.engine.data.calendar import DEFAULT_CALENDAR, is_trading_day, session_bounds, trading_days
from tthf.engine.data.marketdata import day_key, encode_day
from tthf.engine.store import Store, as_store
from tthf.errors import UsageError

log = logging.getLogger("tthf.synth")

TICK = 0.01
LOT = 100.0
BLOCK = 512  # symbols simulated together: bounds memory (~200 MB) and keeps numpy vectorized
PRE_MINUTES = 330  # 04:00-09:30 New York
POST_MINUTES = 240  # 16:00-20:00 (13:00-17:00 on half days)
MINUTES_PER_YEAR = 252 * 390

# Daily state: log-vol level is AR(1) with coefficient cfg.vol_persistence, the log price
# level AR(1) with PRICE_PERSISTENCE; each is a sum over the last K trading days' innovations
# (weights phi**j), exact and independent of the requested range. phi**K is ~2e-3 (vol) and
# ~4e-3 (price), so the truncation is invisible.
VOL_WINDOW = 120
PRICE_WINDOW = 1100
PRICE_PERSISTENCE = 0.995
PRICE_DISPERSION = 0.15  # stationary sd of the log price level around each symbol's reference price

# Random streams are tagged by purpose, so that a new kind of draw never shifts existing ones.
_TAG_NAMES, _TAG_STATIC, _TAG_DAILY, _TAG_DAY = 1, 2, 3, 4
_EPOCH = dt.date(1900, 1, 1)  # daily innovations are laid out by calendar day from here


@dataclass(frozen=True)
class SynthConfig:
    """What to generate and how; every knob has a realistic default.

    Rates are per row (``missing_rate``, ``crossed_rate``, ``zero_quote_rate``) or per
    symbol and day (``halt_rate``, ``stale_rate``, ``late_start_rate``, ``thin_day_rate``).
    """

    n_symbols: int = 100
    start: dt.date = dt.date(2024, 1, 2)
    end: dt.date = dt.date(2024, 2, 29)
    seed: int = 7
    # volatility
    annual_vol: float = 0.30  # median annualized volatility across symbols
    vol_persistence: float = 0.95  # day-to-day AR(1) coefficient of the log volatility level
    vol_dispersion: float = 0.4  # stationary sd of the daily log volatility level
    garch_alpha: float = 0.08
    garch_beta: float = 0.90
    # the planted drift
    signal_half_life: float = 45.0  # minutes, of the latent AR(1) signal
    signal_drift: float = 0.035  # efficient-price drift per minute, in units of the day's minute vol per unit signal
    imbalance_loading: float = 0.6  # log(bid_size / ask_size) per unit signal (plus noise of sd ~0.8)
    # mess
    missing_rate: float = 0.01
    halt_rate: float = 0.01
    stale_rate: float = 0.03
    crossed_rate: float = 2e-4
    zero_quote_rate: float = 1e-4
    late_start_rate: float = 0.005
    thin_day_rate: float = 0.005
    extended_hours: bool = True
    calendar: str = DEFAULT_CALENDAR  # the exchange whose sessions the market trades (ISO MIC)

    def __post_init__(self) -> None:
        if self.n_symbols < 1:
            raise UsageError(f"n_symbols={self.n_symbols}: generate at least one symbol")
        if self.start > self.end:
            raise UsageError(f"start {self.start} is after end {self.end}; swap them")
        if not trading_days(self.start, self.end, self.calendar):
            raise UsageError(f"{self.start}..{self.end} holds no trading day; widen the range")
        for f in fields(self):
            if f.name.endswith("_rate") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise UsageError(f"{f.name}={getattr(self, f.name)}: a rate must be within [0, 1]")
        if not 0.0 <= self.vol_persistence < 1.0:
            raise UsageError(f"vol_persistence={self.vol_persistence}: must be within [0, 1)")
        if self.garch_alpha < 0 or self.garch_beta < 0 or self.garch_alpha + self.garch_beta >= 1:
            raise UsageError(
                f"garch_alpha={self.garch_alpha}, garch_beta={self.garch_beta}: need alpha, beta >= 0 "
                "and alpha + beta < 1 for a stationary variance"
            )
        if self.signal_half_life <= 0 or self.annual_vol <= 0:
            raise UsageError("signal_half_life and annual_vol must be positive")

    @property
    def days(self) -> list[dt.date]:
        return trading_days(self.start, self.end, self.calendar)

    @property
    def signal_phi(self) -> float:
        return 0.5 ** (1.0 / self.signal_half_life)


# ---------------------------------------------------------------------------- universe

_LENGTHS = np.array([1, 2, 3, 4, 5])
_LENGTH_P = np.array([0.02, 0.08, 0.35, 0.48, 0.07])
_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def _names(seed: int, n: int) -> list[str]:
    """Unique ticker-like names in generation order; the first k of n are the k-symbol universe."""
    rng = np.random.default_rng([seed, _TAG_NAMES])
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        lengths = rng.choice(_LENGTHS, size=256, p=_LENGTH_P)
        letters = rng.integers(0, 26, size=(256, 5))
        share_class = rng.random(256) < 0.01
        for length, row, cls in zip(lengths, letters, share_class):
            name = "".join(_LETTERS[row[:length]])
            if cls and length <= 3:
                name += ".B"
            if name not in seen:
                seen.add(name)
                out.append(name)
                if len(out) == n:
                    break
    return out


@dataclass(frozen=True)
class _Universe:
    """Static per-symbol traits, in sorted-name order."""

    names: list[str]
    price: np.ndarray  # reference price level ($)
    vol: np.ndarray  # annualized volatility, as a multiple of cfg.annual_vol
    trades_per_min: np.ndarray  # mean trades per regular minute
    trade_size: np.ndarray  # mean shares per trade
    spread_bps: np.ndarray  # typical quoted spread before the one-tick floor
    depth_usd: np.ndarray  # typical displayed dollar size at each side
    ext_activity: np.ndarray  # chance an extended-hours minute has a row
    missing: np.ndarray  # chance a regular minute's row is absent, as a multiple of cfg.missing_rate

    def take(self, rows: slice) -> _Universe:
        return _Universe(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


@lru_cache(maxsize=16)
def _universe(seed: int, n: int) -> _Universe:
    names = _names(seed, n)

    def normal(k: int) -> np.ndarray:  # one stream per trait, so traits are prefix-stable in n
        return np.random.default_rng([seed, _TAG_STATIC, k]).standard_normal(n)

    liq, zp, zv, zs, zd, zt, ze, zm = (normal(k) for k in range(8))
    price = np.clip(np.exp(np.log(40.0) + 1.0 * zp + 0.3 * liq), 2.0, 2000.0)
    vol = np.exp(0.3 * zv - 0.15 * liq)
    trades_per_min = np.exp(np.log(3000.0) + 1.4 * liq) / 390.0
    trade_size = np.clip(150.0 * np.exp(0.3 * zt) * (40.0 / price) ** 0.3, 20.0, 2000.0)
    spread_bps = np.exp(np.log(6.0) - 0.6 * liq + 0.3 * zv + 0.3 * zs)
    depth_usd = np.exp(np.log(40_000.0) + 0.5 * liq + 0.4 * zd)
    ext_activity = 1.0 / (1.0 + np.exp(-(-2.0 + 0.9 * liq + 0.5 * ze)))
    missing = np.exp(0.6 * zm - 0.18 - 0.3 * liq)  # mean ~1
    order = np.argsort(np.array(names))
    return _Universe(
        [names[i] for i in order],
        *(a[order] for a in (price, vol, trades_per_min, trade_size, spread_bps, depth_usd, ext_activity, missing)),
    )


def symbols(cfg: SynthConfig) -> list[str]:
    """The universe's tickers, sorted; the first k generated names are shared by every larger universe."""
    return list(_universe(cfg.seed, cfg.n_symbols).names)


# ---------------------------------------------------------------------------- daily state


def _window(day: dt.date, length: int, calendar: str) -> list[dt.date]:
    """The ``length`` trading days ending at ``day`` (inclusive)."""
    days = trading_days(day - dt.timedelta(days=int(length * 1.5) + 30), day, calendar)
    return days[-length:]


def _innovations(seed: int, n: int, days: list[dt.date]) -> np.ndarray:
    """(len(days), n, 2) standard normals: [vol level, price level] per day and symbol.

    Calendar day ``d`` always owns the same 2n doubles of one PCG64 stream (offset
    ``(d - _EPOCH) * 2n``, reached with ``advance``), so any span yields the same values
    for the days it shares with another span. Box-Muller keeps it one double per draw.
    """
    bits = np.random.PCG64(np.random.SeedSequence([seed, _TAG_DAILY, n]))
    bits.advance((days[0] - _EPOCH).days * 2 * n)
    u = np.random.Generator(bits).random(((days[-1] - days[0]).days + 1, n, 2))
    u = u[[(d - days[0]).days for d in days]]
    radius = np.sqrt(-2.0 * np.log1p(-u[..., 0]))
    angle = 2.0 * np.pi * u[..., 1]
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def _daily_states(cfg: SynthConfig, days: Sequence[dt.date]) -> dict[dt.date, tuple[np.ndarray, np.ndarray]]:
    """Per day: (log vol deviation, unit-variance log price deviation), each (n_symbols,)."""
    for day in days:
        if not is_trading_day(day, cfg.calendar):
            raise UsageError(
                f"{day} is not a trading day on {cfg.calendar}; pick one of calendar.trading_days(start, end)"
            )
    first = _window(min(days), PRICE_WINDOW, cfg.calendar)[0]
    span = trading_days(first, max(days), cfg.calendar)
    index = {d: i for i, d in enumerate(span)}
    innov = _innovations(cfg.seed, cfg.n_symbols, span)  # (trading days, S, 2)
    vol_w = (cfg.vol_persistence ** np.arange(VOL_WINDOW - 1, -1, -1))[:, None]
    price_w = (PRICE_PERSISTENCE ** np.arange(PRICE_WINDOW - 1, -1, -1))[:, None]
    vol_scale = cfg.vol_dispersion * math.sqrt(1.0 - cfg.vol_persistence**2)
    price_scale = math.sqrt(1.0 - PRICE_PERSISTENCE**2)
    out = {}
    for day in days:
        end = index[day] + 1
        # elementwise products summed row by row: the same bits whichever range is computed
        level = (vol_w * innov[end - VOL_WINDOW : end, :, 0]).sum(axis=0) * vol_scale
        price = (price_w * innov[end - PRICE_WINDOW : end, :, 1]).sum(axis=0) * price_scale
        out[day] = (level, price)
    return out


# ---------------------------------------------------------------------------- one day


@dataclass(frozen=True)
class _DayPaths:
    """The simulated grid of one day: (S, M) arrays over 04:00..post-market end, plus latent truth."""

    names: list[str]  # (S,) the block's symbols
    grid_ts: np.ndarray  # (M,) datetime64[us], UTC naive
    regular: slice  # the regular-session columns
    present: np.ndarray  # (S, M) bool, rows emitted
    quote: dict[str, np.ndarray]  # bid, ask, bid_size, ask_size
    trade: dict[str, np.ndarray]  # open, high, low, close, vwap (NaN = no trade), volume, trade_count
    signal: np.ndarray  # (S, M) latent AR(1) signal
    minute_vol: np.ndarray  # (S,) the day's base per-minute volatility


def _profiles(n_regular: int) -> tuple[np.ndarray, np.ndarray]:
    """Intraday multipliers over the full grid: volatility (U-shape) and trading activity."""
    tau = np.arange(n_regular, dtype=np.float64)
    to_close = n_regular - 1 - tau
    u = 1.0 + 1.6 * np.exp(-tau / 20.0) + 0.8 * np.exp(-to_close / 15.0)
    u /= np.sqrt(np.mean(u**2))
    w = 1.0 + 2.0 * np.exp(-tau / 25.0) + 3.0 * np.exp(-to_close / 12.0)
    w /= w.mean()
    pre_t = np.arange(PRE_MINUTES)
    post_t = np.arange(POST_MINUTES)
    pre_w = np.where(pre_t >= PRE_MINUTES - 90, 0.08, 0.02)  # busier from 08:00
    post_w = np.where(post_t < 30, 0.15, 0.03)
    vol = np.concatenate([np.full(PRE_MINUTES, 0.5), u, np.full(POST_MINUTES, 0.5)])
    act = np.concatenate([pre_w, w, post_w])
    return vol, act


def _episodes(
    rng: np.random.Generator, n_sym: int, n_min: int, rate: float, lo: int, hi: int, first: int, last: int
) -> np.ndarray:
    """(S, M) mask of at most one contiguous episode per symbol of length lo..hi inside [first, last)."""
    hit = rng.random(n_sym) < rate
    length = rng.integers(lo, hi + 1, n_sym)
    begin = first + (rng.random(n_sym) * np.maximum(last - first - length, 1)).astype(np.int64)
    t = np.arange(n_min)
    return hit[:, None] & (t >= begin[:, None]) & (t < (begin + length)[:, None])


def _round_lots(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.round(x / LOT), 1.0) * LOT


def _ticks(x: np.ndarray) -> np.ndarray:
    return np.round(x / TICK) * TICK


class _Clock(NamedTuple):
    """The day's minute grid: 04:00 New York to the end of post-market, the regular columns, the profiles."""

    grid_ts: np.ndarray  # (M,) datetime64[us], UTC naive
    reg: slice
    is_reg: np.ndarray  # (M,) bool
    n_reg: int
    vol_prof: np.ndarray
    act_prof: np.ndarray

    @classmethod
    def of(cls, day: dt.date, calendar: str) -> _Clock:
        open_utc, close_utc = session_bounds(day, calendar)
        n_reg = int((close_utc - open_utc).total_seconds() // 60)
        m = PRE_MINUTES + n_reg + POST_MINUTES
        reg = slice(PRE_MINUTES, PRE_MINUTES + n_reg)
        base = np.datetime64(open_utc.replace(tzinfo=None), "us") - np.timedelta64(PRE_MINUTES, "m")
        is_reg = np.zeros(m, dtype=bool)
        is_reg[reg] = True
        return cls(base + np.arange(m) * np.timedelta64(60_000_000, "us"), reg, is_reg, n_reg, *_profiles(n_reg))


class _Prices(NamedTuple):
    ret: np.ndarray  # (S, M) log mid returns
    z: np.ndarray  # GARCH shocks
    h_path: np.ndarray  # GARCH variance state
    x: np.ndarray  # latent AR(1) signal
    minute_vol: np.ndarray  # (S,)
    local: np.ndarray  # scale without the GARCH state


def _price_paths(
    cfg: SynthConfig, uni: _Universe, vol_level: np.ndarray, clock: _Clock, rng: np.random.Generator
) -> _Prices:
    """Efficient log price: GARCH(1,1) shocks with t(6) innovations, U-shaped scale, latent drift."""
    S, M = len(uni.names), len(clock.grid_ts)
    vol_prof = clock.vol_prof
    minute_vol = cfg.annual_vol * uni.vol * np.exp(vol_level) / math.sqrt(MINUTES_PER_YEAR)
    eps = rng.standard_t(6, size=(S, M)) * math.sqrt(4.0 / 6.0)
    eta = rng.standard_normal((S, M))
    phi = cfg.signal_phi
    a, b = cfg.garch_alpha, cfg.garch_beta
    omega = 1.0 - a - b
    z = np.empty((S, M))
    h_path = np.empty((S, M))
    x = np.empty((S, M))
    h = np.ones(S)
    xt = rng.standard_normal(S)
    innov_x = math.sqrt(1.0 - phi * phi)
    for t in range(M):
        h_path[:, t] = h
        z[:, t] = np.sqrt(h) * eps[:, t]
        h = np.minimum(omega + a * z[:, t] ** 2 + b * h, 25.0)
        xt = phi * xt + innov_x * eta[:, t]
        x[:, t] = xt
    local = minute_vol[:, None] * vol_prof[None, :]  # scale without the GARCH state
    drift = np.zeros((S, M))
    drift[:, 1:] = cfg.signal_drift * minute_vol[:, None] * x[:, :-1]  # announced by x one minute earlier
    ret = local * z + drift
    return _Prices(ret, z, h_path, x, minute_vol, local)


def _presence(cfg: SynthConfig, uni: _Universe, clock: _Clock, prices: _Prices, rng: np.random.Generator) -> np.ndarray:
    """Rows emitted: missing rows, extended hours, halts (adding a jump on resumption to the returns), late starts, thin days."""
    S, M = prices.ret.shape
    reg, is_reg, n_reg, act_prof, minute_vol, ret = (
        clock.reg,
        clock.is_reg,
        clock.n_reg,
        clock.act_prof,
        prices.minute_vol,
        prices.ret,
    )
    u = rng.random((S, M))
    miss = np.clip(cfg.missing_rate * uni.missing, 0.0, 0.5)
    ext_p = uni.ext_activity[:, None] * act_prof[None, :] / act_prof[~is_reg].max() if cfg.extended_hours else 0.0
    present = np.where(is_reg[None, :], u >= miss[:, None], u < ext_p)
    halt = _episodes(rng, S, M, cfg.halt_rate, 5, 30, reg.start + 5, reg.stop - 10)
    present &= ~halt
    resume = halt[:, :-1] & ~halt[:, 1:]
    ret[:, 1:] += np.where(resume, minute_vol[:, None] * 8.0 * rng.standard_normal((S, M - 1)), 0.0)
    late = np.less(rng.random(S), cfg.late_start_rate)[:, None] & (
        np.arange(M)[None, :] < (reg.start + rng.integers(30, max(n_reg - 60, 31), S))[:, None]
    )
    present &= ~late
    thin_keep = _episodes(rng, S, M, 1.0, 5, 25, reg.start, reg.stop)
    thin = np.less(rng.random(S), cfg.thin_day_rate)
    present &= ~thin[:, None] | thin_keep
    return present


def _quotes(
    cfg: SynthConfig, uni: _Universe, clock: _Clock, prices: _Prices, mid: np.ndarray, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Bid/ask and sizes with stale, crossed and zero quotes; also the clean spread in ticks."""
    S, M = mid.shape
    reg, is_reg, vol_prof, h_path, x = clock.reg, clock.is_reg, clock.vol_prof, prices.h_path, prices.x
    # quotes: spreads widen with volatility and in extended hours; at least one tick
    vol_ratio = vol_prof[None, :] * np.sqrt(h_path)
    ext_wide = np.where(is_reg, 1.0, 3.0)[None, :]
    jitter = np.exp(0.25 * rng.standard_normal((S, M)))
    spread = mid * uni.spread_bps[:, None] * 1e-4 * vol_ratio**0.6 * ext_wide * jitter
    n_ticks = np.maximum(np.round(spread / TICK), 1.0)
    bid_c = np.round(mid / TICK - n_ticks / 2.0)
    bid = np.maximum(bid_c, 1.0) * TICK
    ask = (np.maximum(bid_c, 1.0) + n_ticks) * TICK
    # sizes: dollar depth / price, thinner when volatile and off-hours; log(bid/ask) carries the signal
    depth = uni.depth_usd[:, None] / mid / np.sqrt(vol_ratio) * np.where(is_reg, 1.0, 0.3)[None, :]
    tilt = cfg.imbalance_loading * x + 0.6 * rng.standard_normal((S, M))
    noise = 0.4 * rng.standard_normal((2, S, M))
    bid_size = _round_lots(depth * np.exp(tilt / 2.0 + noise[0]))
    ask_size = _round_lots(depth * np.exp(-tilt / 2.0 + noise[1]))

    # stale quotes: the quote freezes at its value when the episode starts
    stale = _episodes(rng, S, M, cfg.stale_rate, 3, 20, reg.start, reg.stop)
    source = np.maximum.accumulate(np.where(stale, 0, np.arange(M)[None, :]), axis=1)
    bid, ask, bid_size, ask_size = (np.take_along_axis(q, source, axis=1) for q in (bid, ask, bid_size, ask_size))

    # defects: crossed quotes (ask below bid) and zero quotes (one side empty); more off-hours
    off = np.where(is_reg, 1.0, 5.0)[None, :]
    crossed = rng.random((S, M)) < cfg.crossed_rate * off
    ask = np.where(crossed, bid - TICK * rng.integers(1, 4, (S, M)), ask)
    zero = rng.random((S, M)) < cfg.zero_quote_rate * off
    zero_bid = zero & (rng.random((S, M)) < 0.5)
    zero_ask = zero & ~zero_bid
    bid, bid_size = np.where(zero_bid, 0.0, bid), np.where(zero_bid, 0.0, bid_size)
    ask, ask_size = np.where(zero_ask, 0.0, ask), np.where(zero_ask, 0.0, ask_size)
    return {"bid": bid, "ask": ask, "bid_size": bid_size, "ask_size": ask_size}, n_ticks


def _trades(
    uni: _Universe,
    vol_level: np.ndarray,
    clock: _Clock,
    prices: _Prices,
    mid: np.ndarray,
    n_ticks: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Trade bars: Poisson counts, busier at the open and close and on large moves."""
    S, M = mid.shape
    act_prof, z, local = clock.act_prof, prices.z, prices.local
    lam = uni.trades_per_min[:, None] * act_prof[None, :] * np.exp(vol_level)[:, None] * (0.5 + 0.5 * np.abs(z))
    count = rng.poisson(lam)
    traded = count > 0
    half = n_ticks * TICK / 2.0  # the clean quote: stale, crossed or zero quotes do not move trades
    prev_mid = np.concatenate([mid[:, :1], mid[:, :-1]], axis=1)
    side = np.where(rng.random((2, S, M)) < 0.5, -1.0, 1.0)
    t_close = _ticks(mid + side[1] * half)
    t_open = np.where(count > 1, _ticks(prev_mid + side[0] * half), t_close)  # one trade: one price
    excursion = mid * local * np.abs(rng.standard_normal((2, S, M))) * (count > 1)
    t_high = np.maximum(t_open, t_close) + np.ceil(excursion[0] / TICK) * TICK
    t_low = np.maximum(np.minimum(t_open, t_close) - np.ceil(excursion[1] / TICK) * TICK, TICK)
    spread_vwap = 0.25 * (t_high - t_low) * rng.standard_normal((S, M))
    t_vwap = np.clip(np.round(((t_open + t_close) / 2.0 + spread_vwap) * 1e4) / 1e4, t_low, t_high)
    size_noise = np.exp(0.5 * rng.standard_normal((S, M)) - 0.125)  # mean 1
    volume = np.maximum(np.round(count * uni.trade_size[:, None] * size_noise), count)
    nan = np.nan
    trade = {
        "open": np.where(traded, t_open, nan),
        "high": np.where(traded, t_high, nan),
        "low": np.where(traded, t_low, nan),
        "close": np.where(traded, t_close, nan),
        "volume": volume.astype(np.float64),
        "trade_count": count.astype(np.int64),
        "vwap": np.where(traded, t_vwap, nan),
    }
    return trade


def _simulate(
    cfg: SynthConfig, day: dt.date, uni: _Universe, state: tuple[np.ndarray, np.ndarray], block: int
) -> _DayPaths:
    """One block of symbols (``uni`` and ``state`` sliced to it) over the whole day grid.

    The phases draw from one random stream in a fixed order, so a block is reproducible.
    """
    vol_level, price_level = state
    rng = np.random.default_rng([cfg.seed, _TAG_DAY, day.toordinal(), cfg.n_symbols, block])
    clock = _Clock.of(day, cfg.calendar)
    prices = _price_paths(cfg, uni, vol_level, clock, rng)
    present = _presence(cfg, uni, clock, prices, rng)
    log_mid = np.log(uni.price * np.exp(PRICE_DISPERSION * price_level))[:, None] + np.cumsum(prices.ret, axis=1)
    mid = np.exp(log_mid)
    quote, n_ticks = _quotes(cfg, uni, clock, prices, mid, rng)
    trade = _trades(uni, vol_level, clock, prices, mid, n_ticks, rng)
    return _DayPaths(uni.names, clock.grid_ts, clock.reg, present, quote, trade, prices.x, prices.minute_vol)


def _blocks(cfg: SynthConfig, day: dt.date, state: tuple[np.ndarray, np.ndarray]) -> Iterator[_DayPaths]:
    """The day in blocks of BLOCK symbols, in symbol order; each block has its own random stream."""
    uni = _universe(cfg.seed, cfg.n_symbols)
    for block, first in enumerate(range(0, cfg.n_symbols, BLOCK)):
        rows = slice(first, first + BLOCK)
        yield _simulate(cfg, day, uni.take(rows), (state[0][rows], state[1][rows]), block)


def _frame(paths: _DayPaths) -> pl.DataFrame:
    sym_idx, t_idx = np.nonzero(paths.present)  # row-major: sorted by (symbol, ts)
    names = pl.Series("symbol", paths.names, dtype=pl.String)
    cols: dict[str, pl.Series] = {
        "symbol": names.gather(sym_idx),
        "ts": pl.Series("ts", paths.grid_ts[t_idx]).dt.replace_time_zone("UTC"),
    }
    for name, arr in paths.quote.items():
        cols[name] = pl.Series(name, arr[sym_idx, t_idx])
    for name in ("open", "high", "low", "close"):
        cols[name] = pl.Series(name, paths.trade[name][sym_idx, t_idx], nan_to_null=True)
    cols["volume"] = pl.Series("volume", paths.trade["volume"][sym_idx, t_idx])
    cols["trade_count"] = pl.Series("trade_count", paths.trade["trade_count"][sym_idx, t_idx])
    cols["vwap"] = pl.Series("vwap", paths.trade["vwap"][sym_idx, t_idx], nan_to_null=True)
    return pl.DataFrame(list(cols.values()))


def generate_day(cfg: SynthConfig, day: dt.date) -> pl.DataFrame:
    """One trading day in the raw schema, sorted by (symbol, ts); identical whatever range it is part of."""
    return _day_frame(cfg, day, _daily_states(cfg, [day])[day])


def _day_frame(cfg: SynthConfig, day: dt.date, state: tuple[np.ndarray, np.ndarray]) -> pl.DataFrame:
    return pl.concat([_frame(paths) for paths in _blocks(cfg, day, state)])


def latent_forecast(cfg: SynthConfig, day: dt.date) -> pl.DataFrame:
    """The oracle: E[ret_1h] of the efficient price given the latent signal, per symbol and regular minute.

    ``ret_1h_expected = signal_drift * minute_vol * x_t * (1 - phi**60) / (1 - phi)``. Its
    correlation with realized ``ret_1h`` is the ceiling for any model of the planted drift.
    """
    phi = cfg.signal_phi
    horizon = (1.0 - phi**60) / (1.0 - phi)
    frames = []
    for paths in _blocks(cfg, day, _daily_states(cfg, [day])[day]):
        x = paths.signal[:, paths.regular]
        n_sym, n_min = x.shape
        frames.append(
            pl.DataFrame(
                {
                    "symbol": pl.Series(paths.names, dtype=pl.String).gather(np.repeat(np.arange(n_sym), n_min)),
                    "ts": pl.Series(np.tile(paths.grid_ts[paths.regular], n_sym)).dt.replace_time_zone("UTC"),
                    "signal": x.ravel(),
                    "ret_1h_expected": (cfg.signal_drift * paths.minute_vol[:, None] * x * horizon).ravel(),
                }
            )
        )
    return pl.concat(frames)


# ---------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SynthSummary:
    root: str
    days: int
    symbols: int
    rows: int
    bytes: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"wrote {self.days} day(s) x {self.symbols} symbols to {self.root}: {self.rows:,} rows, "
            f"{self.bytes / 1e6:,.1f} MB in {self.seconds:.1f} s"
        )


def generate_market(
    cfg: SynthConfig, root: Store | str, *, on_day: Callable[[dt.date, int], None] | None = None
) -> SynthSummary:
    """Write every trading day of ``cfg`` as ``{root}/date=YYYY-MM-DD/part-0.parquet``.

    Existing partitions of those dates are overwritten; other dates are left alone.
    ``on_day(day, rows)`` is called after each day is written (the CLI's progress bar).
    """
    started = time.perf_counter()
    store = as_store(root)
    days = cfg.days
    states = _daily_states(cfg, days)
    rows = written = 0
    for day in days:
        table = _day_frame(cfg, day, states[day])
        key = day_key(day)
        data = encode_day(day, table, store.uri(key), cfg.calendar)
        store.write_bytes(key, data)
        rows += table.height
        written += len(data)
        log.debug("wrote %s (%d rows)", store.uri(key), table.height)
        if on_day:
            on_day(day, table.height)
    return SynthSummary(store.uri(), len(days), cfg.n_symbols, rows, written, time.perf_counter() - started)

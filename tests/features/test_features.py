"""Features, mask and labels of tthf.engine.features on tiny hand-built raw frames."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tthf.engine.data.calendar import session_bounds, session_minutes
from tthf.engine.features import (
    COUNT_KEYS,
    FEATURE_GROUPS,
    FEATURE_NAMES,
    MAX_QUOTE_AGE,
    build_day,
    clean_rows,
    compute_grid,
    end_stamp_warning,
    grid_arrays,
    neutral,
)
from tthf.errors import DataError, UsageError

DAY = dt.date(2024, 3, 12)  # a Tuesday, EDT
DOCS = Path(__file__).resolve().parents[2] / "docs" / "features.md"
MINUTE = dt.timedelta(minutes=1)


def col(name: str) -> int:
    return FEATURE_NAMES.index(name)


def bars(day: dt.date, symbol: str, tids, **values) -> pl.DataFrame:
    """Rows of one symbol at minute offsets ``tids`` from the open; unset columns get plain values."""
    tids = np.asarray(tids)
    start, _ = session_bounds(day)
    n = len(tids)
    mid = values.pop("mid", np.full(n, 100.0))
    cols = {
        "bid": mid - 0.01,
        "ask": mid + 0.01,
        "bid_size": np.full(n, 300.0),
        "ask_size": np.full(n, 200.0),
        "open": mid,
        "high": mid + 0.02,
        "low": mid - 0.02,
        "close": mid,
        "volume": np.full(n, 1000.0),
        "trade_count": np.full(n, 5, dtype=np.int64),
        "vwap": mid,
    }
    cols.update({k: np.broadcast_to(np.asarray(v), (n,)).copy() for k, v in values.items()})
    ts = [start + int(t) * MINUTE for t in tids]
    frame = pl.DataFrame({"symbol": [symbol] * n, "ts": ts, **cols})
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")), pl.col("trade_count").cast(pl.Int64))


def random_raw(
    day: dt.date, n_sym: int = 3, seed: int = 0, missing: float = 0.05, extended: bool = True
) -> pl.DataFrame:
    """A random-walk day with missing rows, trade-less minutes and extended-hours rows."""
    rng = np.random.default_rng(seed)
    start, end = session_bounds(day)
    n_min = int((end - start).total_seconds() // 60)
    tids = np.arange(-20 if extended else 0, n_min + (20 if extended else 0))
    frames = []
    for s in range(n_sym):
        n = len(tids)
        mid = 40.0 * (s + 1) * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
        half = mid * rng.uniform(0.5e-4, 3e-4, n)
        volume = np.where(rng.random(n) < 0.25, 0.0, rng.integers(1, 50, n) * 100.0)
        traded = volume > 0
        close = np.where(traded, mid + rng.normal(0, 1, n) * half, np.nan)
        keep = rng.random(n) >= missing
        frame = bars(
            day,
            f"S{s}",
            tids,
            mid=mid,
            bid=mid - half,
            ask=mid + half,
            bid_size=rng.integers(1, 40, n) * 100.0,
            ask_size=rng.integers(1, 40, n) * 100.0,
            open=close,
            high=np.where(traded, np.fmax(close, mid) + half, np.nan),
            low=np.where(traded, np.fmin(close, mid) - half, np.nan),
            close=close,
            volume=volume,
            trade_count=np.where(traded, rng.integers(1, 30, n), 0),
            vwap=close,
        ).filter(pl.Series(keep))
        frames.append(frame)
    return pl.concat(frames).with_columns(pl.col("open", "high", "low", "close", "vwap").fill_nan(None))


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint8)


def ts_of(day: dt.date, t: int) -> dt.datetime:
    return session_bounds(day)[0] + t * MINUTE


def in_session(day: dt.date) -> pl.Expr:
    return (pl.col("ts") >= ts_of(day, 0)) & (pl.col("ts") < session_bounds(day)[1])


# ---------------------------------------------------------------------------- the table


def test_feature_table_in_docs_matches_code():
    text = DOCS.read_text()
    section = text.split("## Features\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| `")
    ]
    assert [r[0].strip("`") for r in rows] == list(FEATURE_NAMES)
    assert {r[0].strip("`"): r[1] for r in rows} == FEATURE_GROUPS
    assert {r[0].strip("`"): float(r[4]) for r in rows} == {n: neutral(n) for n in FEATURE_NAMES}
    assert len(FEATURE_NAMES) == 59 == len(set(FEATURE_NAMES))
    assert set(FEATURE_GROUPS.values()) == {"price", "volume", "volatility", "microstructure", "technical"}


def test_count_keys_are_documented():
    section = DOCS.read_text().split("## Cleaning rules and counts\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert documented == list(COUNT_KEYS)


# ---------------------------------------------------------------------------- basics


def test_shapes_types_finite_and_counts_add_up():
    raw = random_raw(DAY)
    day = build_day(raw, DAY)
    assert day.symbols == ["S0", "S1", "S2"]
    assert day.features.shape == (3, 390, 59) and day.features.dtype == np.float32
    assert day.features.flags["C_CONTIGUOUS"] and day.mask.flags["C_CONTIGUOUS"]
    assert day.labels.shape == (3, 390, 2) and day.labels.dtype == np.float32
    assert np.isfinite(day.features).all()
    assert np.array_equal(day.minutes, session_minutes(DAY))
    assert day.feature_names == list(FEATURE_NAMES)
    c = day.counts
    assert list(c) == list(COUNT_KEYS)
    assert c["rows_in"] == raw.height
    assert c["extended_hours"] == raw.filter(~in_session(DAY)).height > 0
    dropped = ("null_key", "extended_hours", "unlisted_symbol", "duplicate_rows")
    assert c["rows_in"] == sum(c[k] for k in dropped) + c["rows_used"]
    assert c["missing_minutes"] == 3 * 390 - c["rows_used"] > 0
    assert c["masked_out"] == int((~day.mask).sum())
    assert 0.8 < np.mean(~np.isnan(day.labels[..., 0])) < 0.85  # (390-60)/390 minus a few gaps


def test_null_keys_are_dropped_and_counted():
    base = bars(DAY, "A", range(390))
    nulls = pl.concat(
        [
            bars(DAY, "A", [8]).with_columns(pl.lit(None, pl.String).alias("symbol")),
            bars(DAY, "A", [9]).with_columns(pl.lit(None, pl.Datetime("us", "UTC")).alias("ts")),
        ]
    )
    day = build_day(pl.concat([base, nulls]), DAY)
    assert day.counts["null_key"] == 2 and day.counts["ts_floored"] == 0
    assert np.array_equal(bits(day.features), bits(build_day(base, DAY).features))


def test_sub_minute_timestamps_are_floored_to_their_minute_and_counted():
    """A vendor stamping a bar anywhere inside its minute (09:30:59.999 for the 09:30 bar) reads as one stamping its start."""
    raw = random_raw(DAY, n_sym=3, seed=11)
    rng = np.random.default_rng(1)
    late = pl.Series(rng.integers(1, 60_000_000, raw.height)).cast(pl.Duration("us"))  # 1 us .. 59.999999 s
    stamped = raw.with_columns(pl.col("ts") + late)
    day, ref = build_day(stamped, DAY), build_day(raw, DAY)
    assert np.array_equal(bits(day.features), bits(ref.features)) and np.array_equal(day.mask, ref.mask)
    assert day.counts["ts_floored"] == raw.height  # the extended-hours rows too: flooring comes before the session
    assert {k: v for k, v in day.counts.items() if k != "ts_floored"} == {
        k: v for k, v in ref.counts.items() if k != "ts_floored"
    }
    # each value lands on the minute it was stamped in, the session's edges included
    edges = bars(DAY, "A", [-1, 0, 389, 390], mid=np.array([1.0, 2.0, 3.0, 4.0]))
    clean = clean_rows(edges.with_columns(pl.col("ts") + dt.timedelta(seconds=59, milliseconds=999)), DAY, None, "x")
    assert clean.rows.select("tid", "close").rows() == [(0, 2.0), (389, 3.0)]
    assert clean.counts["ts_floored"] == 4 and clean.counts["extended_hours"] == 2  # 09:29:59.999 and 16:00:59.999


def test_rows_that_share_a_minute_once_floored_follow_the_duplicates_rule():
    raw = bars(DAY, "A", range(390))
    copy = raw.slice(7, 1).with_columns(pl.col("ts") + dt.timedelta(seconds=30))
    day = build_day(pl.concat([raw, copy]), DAY)
    assert day.counts["duplicate_rows"] == 1 and day.counts["ts_floored"] == 1
    assert np.array_equal(bits(day.features), bits(build_day(raw, DAY).features))
    second_bar = copy.with_columns(pl.col("bid") * 0.5)
    with pytest.raises(DataError) as info:
        build_day(pl.concat([raw, second_bar]), DAY, source="x.parquet")
    message = str(info.value)
    assert message.startswith("x.parquet: 2 rows share a (symbol, ts) with different values once ts is floored")
    assert "(1 rows had seconds: more than one bar a minute? aggregate them to minute bars)" in message
    assert "symbol='A' ts=2024-03-12T13:37:00+00:00" in message
    with pytest.raises(DataError) as info:  # without flooring, the message says nothing about it
        build_day(pl.concat([raw, raw.slice(7, 1).with_columns(pl.col("bid") * 0.5)]), DAY)
    assert "floored" not in str(info.value)


def test_bars_stamped_with_their_end_are_warned_about_not_shifted(caplog: pytest.LogCaptureFixture):
    start_stamped = random_raw(DAY, n_sym=2, seed=12, extended=False)
    end_stamped = start_stamped.with_columns(pl.col("ts") + MINUTE)  # 09:31 .. 16:00
    warning = end_stamp_warning(end_stamped, DAY, "x.parquet")
    assert warning.startswith("x.parquet: the bars of 2024-03-12 look stamped with their minute's end: 2 row(s)")
    assert "at the close (16:00 America/New_York) and none at the open (09:30)" in warning
    assert "tthf-ingest csv --bar-label end" in warning and "subtract one minute from ts" in warning
    with caplog.at_level("WARNING", logger="tthf.features"):
        day = build_day(end_stamped, DAY, source="x.parquet")
    assert [r.getMessage() for r in caplog.records] == [warning]
    assert day.counts["extended_hours"] == 2  # built as stamped: nothing is guessed
    # start-stamped bars, even with post-market rows at 16:00, are not suspect; nor is a date with a 09:30 row
    assert end_stamp_warning(start_stamped, DAY, "x") == ""
    assert end_stamp_warning(random_raw(DAY, n_sym=2, seed=12, extended=True), DAY, "x") == ""
    assert end_stamp_warning(pl.concat([end_stamped, bars(DAY, "B", [0])]), DAY, "x") == ""
    # the close is the calendar's: 13:00 on a half day
    half = dt.date(2024, 7, 3)
    warning = end_stamp_warning(bars(half, "A", range(1, 211)), half, "x")
    assert "(13:00 America/New_York)" in warning and end_stamp_warning(bars(half, "A", range(210)), half, "x") == ""


def test_feature_values_against_numpy():
    rng = np.random.default_rng(3)
    n = 390
    mid = 50 * np.exp(np.cumsum(rng.normal(0, 2e-3, n)))
    bs, as_ = rng.integers(1, 30, n) * 100.0, rng.integers(1, 30, n) * 100.0
    volume = np.where(np.arange(n) % 7 == 3, 0.0, 500.0)
    raw = bars(DAY, "A", range(n), mid=mid, bid_size=bs, ask_size=as_, volume=volume)
    f = build_day(raw, DAY).features[0].astype(np.float64)
    lm = np.log(mid)
    r = np.r_[np.nan, np.diff(lm)]
    t = np.arange(n)

    def trailing(x, k, fn, min_n=1):
        out = np.full(n, np.nan)
        for i in range(n):
            w = x[max(0, i - k + 1) : i + 1]
            w = w[~np.isnan(w)]
            if len(w) >= min_n:
                out[i] = fn(w)
        return out

    def check(name, expected, rtol=1e-5, atol=1e-7):
        expected = np.where(np.isfinite(expected), expected, neutral(name))
        np.testing.assert_allclose(f[:, col(name)], expected, rtol=rtol, atol=atol, err_msg=name)

    check("ret_1", r)
    check("ret_15", np.r_[np.full(15, np.nan), lm[15:] - lm[:-15]])
    check("ret_open", lm - lm[0])
    check("rv_5", np.sqrt(trailing(r**2, 5, np.mean)))
    check("rv_day", np.sqrt(trailing(r**2, n, np.mean)))
    imb = (bs - as_) / (bs + as_)
    check("imbalance", imb)
    check("imbalance_ma15", trailing(imb, 15, np.mean))
    check("spread_bps", 1e4 * 0.02 / mid, rtol=1e-4)
    sd30 = trailing(mid, 30, lambda w: np.std(w, ddof=1), 2)
    check("zscore_30", (mid - trailing(mid, 30, np.mean)) / sd30, rtol=1e-3, atol=1e-4)
    check("volume_rel_5", np.log1p(volume) - np.log1p(trailing(volume, 5, np.mean)), rtol=1e-4)
    check("no_trade", (volume == 0).astype(float))
    last_trade = np.maximum.accumulate(np.where(volume > 0, t, -1))
    check("minutes_since_trade", np.minimum(t - last_trade, 60))
    gain = loss = np.nan
    rsi = np.full(n, np.nan)
    for i in range(1, n):
        g, l_ = max(r[i], 0.0), max(-r[i], 0.0)
        gain = g if math.isnan(gain) else gain + (g - gain) / 14
        loss = l_ if math.isnan(loss) else loss + (l_ - loss) / 14
        rsi[i] = 100 * gain / (gain + loss)
    check("rsi_14", rsi, rtol=1e-4)
    check("tod_frac", t / n)
    check("tod_cos", np.cos(2 * np.pi * t / n), atol=1e-6)


# ---------------------------------------------------------------------------- causality


def _perturbations(full: pl.DataFrame, raw: pl.DataFrame, t: int):
    after = pl.col("ts") > ts_of(DAY, t)
    prices = ["bid", "ask", "open", "high", "low", "close", "vwap"]
    rng = np.random.default_rng(t)
    yield (
        "prices",
        raw.with_columns([pl.when(after).then(pl.col(c) * 1.01).otherwise(pl.col(c)).alias(c) for c in prices]),
    )
    yield (
        "sizes",
        raw.with_columns(
            pl.when(after).then(pl.col("bid_size") * 3).otherwise(pl.col("bid_size")).alias("bid_size"),
            pl.when(after).then(pl.col("ask_size") / 2).otherwise(pl.col("ask_size")).alias("ask_size"),
            pl.when(after).then(pl.col("volume") + 700).otherwise(pl.col("volume")).alias("volume"),
        ),
    )
    keep = pl.Series(rng.random(raw.height) < 0.5) & (pl.col("ts") != ts_of(DAY, t + 1))
    yield "remove", raw.filter(~after | keep)
    yield "remove_all_after", raw.filter(~after)
    extra = full.join(raw, on=["symbol", "ts"], how="anti").filter(after)
    new_symbol = bars(DAY, "S0A", range(t + 1, 390))
    yield "add", pl.concat([raw, extra, new_symbol])
    yield (
        "bad_quotes",
        raw.with_columns(
            pl.when(after).then(pl.col("ask") + 1).otherwise(pl.col("bid")).alias("bid"),
            pl.when(after & (pl.col("volume") > 0)).then(float("nan")).otherwise(pl.col("ask")).alias("ask"),
        ),
    )


@pytest.mark.parametrize("t", [0, 3, 44, 200, 388])
def test_features_and_mask_up_to_t_ignore_everything_after_t(t):
    full = random_raw(DAY, n_sym=3, seed=11, missing=0.0)
    raw = full.filter(pl.Series(np.random.default_rng(1).random(full.height) >= 0.08))
    base = build_day(raw, DAY)
    for name, changed in _perturbations(full, raw, t):
        other = build_day(changed, DAY)
        rows = [other.symbols.index(s) for s in base.symbols]
        assert np.array_equal(bits(other.features[rows, : t + 1]), bits(base.features[:, : t + 1])), name
        assert np.array_equal(other.mask[rows, : t + 1], base.mask[:, : t + 1]), name
        # labels only look ahead: those whose horizon ends by t are untouched
        assert np.array_equal(
            bits(other.labels[rows, : max(t - 59, 0), 0]), bits(base.labels[:, : max(t - 59, 0), 0])
        ), name
        assert np.array_equal(bits(other.labels[rows, : max(t - 9, 0), 1]), bits(base.labels[:, : max(t - 9, 0), 1])), (
            name
        )
        changed_any = other.symbols != base.symbols or not np.array_equal(bits(other.features), bits(base.features))
        assert changed_any, f"{name} changed nothing"


def test_the_latest_minutes_alone_have_the_full_day_bits():
    """compute_grid(..., start) on the grid cut at t -- the real-time call -- in any symbol order."""
    raw = random_raw(DAY, n_sym=9, seed=4)
    base = build_day(raw, DAY)
    clean = clean_rows(raw, DAY, None, "test")
    rows, symbols, n_minutes = clean.rows, clean.symbols, clean.n_minutes
    order = np.random.default_rng(2).permutation(len(symbols))
    grid = {k: np.ascontiguousarray(v[:, order]) for k, v in grid_arrays(rows, len(symbols), n_minutes).items()}
    for t, start in [(0, 0), (29, 0), (35, 6), (200, 171), (389, 360), (389, 389)]:
        features, mask, _ = compute_grid({k: v[: t + 1] for k, v in grid.items()}, n_minutes, start=start)
        assert np.array_equal(bits(features), bits(base.features[order, start : t + 1])), t
        assert np.array_equal(mask, base.mask[order, : t + 1]), t


def test_labels_react_to_a_price_jump_after_t():
    t = 200
    raw = random_raw(DAY, n_sym=2, seed=5, missing=0.0)
    after = pl.col("ts") > ts_of(DAY, t)
    jumped = raw.with_columns(
        [pl.when(after).then(pl.col(c) * 1.01).otherwise(pl.col(c)).alias(c) for c in ("bid", "ask")]
    )
    a, b = build_day(raw, DAY).labels, build_day(jumped, DAY).labels
    ret_diff = b[:, t - 59 : t + 1, 0] - a[:, t - 59 : t + 1, 0]
    np.testing.assert_allclose(ret_diff, math.log(1.01), atol=1e-6)
    assert np.array_equal(bits(a[:, : t - 59, 0]), bits(b[:, : t - 59, 0]))
    np.testing.assert_allclose(b[:, t + 1 : 330, 0], a[:, t + 1 : 330, 0], atol=1e-6)  # both ends after the jump
    vol_a, vol_b = a[:, t - 9 : t + 1, 1], b[:, t - 9 : t + 1, 1]  # r[t+1] = the jump enters these
    assert (vol_a < 0.009).all() and (vol_b > 0.009).all()
    assert np.array_equal(bits(a[:, : t - 9, 1]), bits(b[:, : t - 9, 1]))


# ---------------------------------------------------------------------------- session and grid


@pytest.mark.parametrize(
    ("day", "open_utc", "n_minutes"),
    [
        (dt.date(2024, 3, 8), dt.datetime(2024, 3, 8, 14, 30), 390),  # EST
        (dt.date(2024, 3, 11), dt.datetime(2024, 3, 11, 13, 30), 390),  # EDT since Mar 10
        (dt.date(2024, 11, 1), dt.datetime(2024, 11, 1, 13, 30), 390),  # EDT
        (dt.date(2024, 11, 4), dt.datetime(2024, 11, 4, 14, 30), 390),  # EST since Nov 3
        (dt.date(2024, 11, 29), dt.datetime(2024, 11, 29, 14, 30), 210),  # half day, 13:00 close
    ],
)
def test_regular_session_filter_is_dst_aware_and_knows_half_days(day, open_utc, n_minutes):
    utc = dt.timezone.utc
    first = dt.datetime.combine(day, dt.time(11, 0), utc)
    ts = [first + i * MINUTE for i in range(12 * 60)]  # 11:00-23:00 UTC: both possible opens and closes
    n = len(ts)
    raw = pl.DataFrame(
        {
            "symbol": ["A"] * n,
            "ts": ts,
            "bid": np.linspace(99, 101, n),
            "ask": np.linspace(99, 101, n) + 0.02,
            "bid_size": 100.0,
            "ask_size": 100.0,
            "open": 100.0,
            "high": 100.0,
            "low": 100.0,
            "close": 100.0,
            "volume": 10.0,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    out = build_day(raw, day)
    assert out.minutes[0] == np.datetime64(open_utc, "us")
    assert len(out.minutes) == n_minutes == out.features.shape[1]
    assert out.counts["extended_hours"] == n - n_minutes and out.counts["rows_used"] == n_minutes
    assert out.mask.all() and np.isfinite(out.features).all()
    # the first minute's mid is the row at the open, which sits at a known place in the ramp
    expected_first = 99 + 2 * ((open_utc - first.replace(tzinfo=None)) / MINUTE) / (n - 1) + 0.01
    assert out.features[0, 0, col("tod_frac")] == 0
    assert out.features[0, -1, col("tod_frac")] == np.float32((n_minutes - 1) / n_minutes)
    assert np.isnan(out.labels[0, n_minutes - 60 :, 0]).all() and not np.isnan(out.labels[0, : n_minutes - 60, 0]).any()
    assert np.isnan(out.labels[0, n_minutes - 10 :, 1]).all() and not np.isnan(out.labels[0, : n_minutes - 10, 1]).any()
    spread = out.features[0, 0, col("spread_bps")]
    assert spread == pytest.approx(1e4 * 0.02 / expected_first, rel=1e-5)


def test_quotes_are_never_carried_across_days_or_from_pre_market():
    yesterday = dt.date(2024, 3, 11)
    prev_day = bars(yesterday, "A", range(390), mid=np.full(390, 80.0))
    pre_market = bars(DAY, "A", [-5, -1], mid=np.full(2, 90.0))
    today = bars(DAY, "A", range(10, 390))
    day = build_day(pl.concat([today, prev_day, pre_market]), DAY)
    assert day.counts["extended_hours"] == 392
    assert not day.mask[0, :10].any() and day.mask[0, 10:].all()
    f = day.features[0]
    assert (f[:10, col("quote_age")] == MAX_QUOTE_AGE + 1).all()
    for name in FEATURE_NAMES:
        if name.startswith("tod_"):
            continue
        assert (f[:10, col(name)] == neutral(name)).all(), name
    assert f[10, col("ret_open")] == 0 and f[10, col("spread_bps")] == pytest.approx(2.0, rel=1e-5)


def test_mask_follows_quote_age_through_halts_and_crossed_quotes():
    tids = [t for t in range(390) if not 100 <= t < 120]  # a 20-minute halt
    crossed = np.isin(tids, range(200, 210))
    mid = np.full(len(tids), 100.0)
    raw = bars(
        DAY,
        "A",
        tids,
        mid=mid,
        bid=np.where(crossed, 100.05, 99.99),
        ask=np.where(crossed, 99.95, 100.01),
        volume=np.where(crossed, 777.0, 1000.0),
    )
    day = build_day(raw, DAY)
    expected = np.ones(390, dtype=bool)
    expected[100 + MAX_QUOTE_AGE : 120] = False
    expected[200 + MAX_QUOTE_AGE : 210] = False
    assert np.array_equal(day.mask[0], expected)
    age = day.features[0, :, col("quote_age")]
    assert list(age[99:107]) == [0, 1, 2, 3, 4, 5, 6, 6] and age[120] == 0
    assert day.counts["quote_crossed"] == 10 and day.counts["missing_minutes"] == 20
    # the crossed minutes keep their trades
    assert day.features[0, 203, col("log_volume")] == np.float32(math.log1p(777.0))
    assert np.isfinite(day.features).all()
    # labels need a valid mask at both ends (ret) or along the whole horizon (vol)
    assert np.isnan(day.labels[0, 45:60, 0]).all() and not np.isnan(day.labels[0, 44, 0])
    assert np.isnan(day.labels[0, 95:120, 1]).all() and not np.isnan(day.labels[0, 94, 1])


def test_unusable_quotes_and_trades_are_counted_and_never_crash():
    n = 390
    raw = bars(DAY, "A", range(n)).with_columns(pl.col("trade_count").cast(pl.Int64))
    edits = {
        10: {"bid": 0.0},
        11: {"ask": -1.0},
        12: {"bid_size": -5.0},
        13: {"ask": float("nan")},
        14: {"bid": float("inf")},
        15: {"bid": 101.0},  # crossed
        16: {"bid": None},
        17: {"close": float("nan")},
        18: {"volume": float("inf")},
        19: {"volume": -3.0},
        20: {"trade_count": -1},
        21: {"high": float("-inf"), "low": 0.0},
    }
    rows = raw.to_dicts()
    for t, change in edits.items():
        rows[t].update(change)
    day = build_day(pl.DataFrame(rows, schema=raw.schema), DAY)
    c = day.counts
    assert (c["quote_nonpositive"], c["quote_nonfinite"], c["quote_crossed"], c["quote_null"]) == (3, 2, 1, 1)
    assert c["trade_invalid"] == 5
    assert np.isfinite(day.features).all()
    expected = np.ones(n, dtype=bool)
    expected[15:17] = False  # last clean quote at 9: ages 6 and 7
    assert np.array_equal(day.mask[0], expected)
    f = day.features[0]
    assert f[18, col("log_volume")] == 0 and f[18, col("no_trade")] == 1
    assert f[15, col("log_volume")] == np.float32(math.log1p(1000.0))


def _quotes_where(raw: pl.DataFrame, at: pl.Expr, **quote: float | None) -> pl.DataFrame:
    """``raw`` with the quote columns set to ``quote`` in the rows ``at`` (trades untouched)."""
    return raw.with_columns(
        *[pl.when(at).then(pl.lit(v, pl.Float64)).otherwise(pl.col(c)).alias(c) for c, v in quote.items()]
    )


def test_a_null_quote_is_a_missing_quote_carried_forward_and_masked_once_stale():
    """Null bid/ask/size: the same features, mask and labels as any unusable quote; trades kept; counted."""
    raw = random_raw(DAY, n_sym=2, seed=11, missing=0.0, extended=False)
    gap = (
        (pl.col("symbol") == "S1")
        & in_session(DAY)
        & (pl.col("ts") >= ts_of(DAY, 100))
        & (pl.col("ts") < ts_of(DAY, 110))
    )
    one = (pl.col("symbol") == "S0") & (pl.col("ts") == ts_of(DAY, 200))
    nulls = _quotes_where(_quotes_where(raw, gap, bid=None, ask=None, bid_size=None, ask_size=None), one, ask_size=None)
    crossed = _quotes_where(_quotes_where(raw, gap, bid=101.0, ask=100.0), one, bid=101.0, ask=100.0)
    a, b = build_day(nulls, DAY), build_day(crossed, DAY)
    assert np.array_equal(bits(a.features), bits(b.features)) and np.array_equal(bits(a.labels), bits(b.labels))
    assert np.array_equal(a.mask, b.mask)
    expected = np.ones(390, dtype=bool)
    expected[100 + MAX_QUOTE_AGE : 110] = False  # ages 1..5 stay valid, 6..10 are masked
    assert np.array_equal(a.mask[1], expected) and a.mask[0].all()
    assert (a.counts["quote_null"], a.counts["quote_crossed"], b.counts["quote_null"]) == (11, 0, 0)
    assert b.counts["quote_crossed"] == 11 and a.counts["symbols_no_quote"] == 0
    # the carried quote is the one of minute 99; the null minutes keep their trades
    f, clean = a.features[1], build_day(raw, DAY).features[1]
    assert np.array_equal(f[100:110, col("spread_bps")], np.repeat(clean[99, col("spread_bps")], 10))
    assert list(f[100:110, col("quote_age")]) == [1, 2, 3, 4, 5, 6, 6, 6, 6, 6]
    assert np.array_equal(bits(f[100:110, col("log_volume")]), bits(clean[100:110, col("log_volume")]))


def test_a_symbol_without_a_usable_quote_all_day_is_masked_and_counted():
    good = random_raw(DAY, n_sym=2, seed=12)
    nq = good.filter(pl.col("symbol") == "S0").with_columns(pl.lit("NQ").alias("symbol"))
    no_quote = _quotes_where(nq, pl.lit(True), bid=None, ask=None)
    mixed = _quotes_where(
        nq.with_columns(pl.lit("NX").alias("symbol")), pl.int_range(pl.len()) % 2 == 0, bid=None
    ).with_columns(pl.col("ask").fill_null(0.0) * 0.0)  # null or zero quotes
    day = build_day(pl.concat([good, no_quote, mixed]), DAY)
    alone = build_day(good, DAY)
    assert day.symbols == ["NQ", "NX", "S0", "S1"] and day.counts["symbols_no_quote"] == 2
    assert not day.mask[:2].any() and np.isnan(day.labels[:2]).all() and np.isfinite(day.features).all()
    assert np.array_equal(bits(day.features[2:]), bits(alone.features)) and np.array_equal(day.mask[2:], alone.mask)
    in_day, mixed_day = nq.filter(in_session(DAY)).height, mixed.filter(in_session(DAY))
    nulls = mixed_day.get_column("bid").null_count()
    assert 0 < nulls < in_day and day.counts["quote_null"] == in_day + nulls
    assert day.counts["quote_nonpositive"] == in_day - nulls
    # listed but absent symbols have no usable quote either
    listed = build_day(good, DAY, symbols=["S1", "ZZ", "S0"])
    assert listed.counts["symbols_no_quote"] == 1 and alone.counts["symbols_no_quote"] == 0


def test_exact_duplicates_are_dropped_and_conflicting_ones_are_an_error():
    raw = random_raw(DAY, n_sym=2, seed=2)
    session = raw.filter(in_session(DAY))
    day = build_day(pl.concat([raw, session.head(7), session.tail(3)]), DAY)
    assert day.counts["duplicate_rows"] == 10
    assert np.array_equal(bits(day.features), bits(build_day(raw, DAY).features))
    conflict = session.head(1).with_columns(pl.col("bid") - 0.5)
    with pytest.raises(DataError, match=r"day\.parquet.*symbol='S0'"):
        build_day(pl.concat([raw, conflict]), DAY, source="day.parquet")


def test_a_symbol_with_few_minutes_gets_a_full_finite_row():
    raw = pl.concat([random_raw(DAY, n_sym=1, seed=4, extended=False), bars(DAY, "B", range(50, 60))])
    day = build_day(raw, DAY)
    b = day.symbols.index("B")
    assert day.symbols == ["B", "S0"]
    assert np.array_equal(np.flatnonzero(day.mask[b]), np.arange(50, 60 + MAX_QUOTE_AGE))
    assert np.isfinite(day.features).all()
    assert np.isnan(day.labels[b, :, 0]).all()
    assert np.array_equal(np.flatnonzero(~np.isnan(day.labels[b, :, 1])), np.arange(50, 55))


def test_row_order_does_not_matter():
    raw = random_raw(DAY, n_sym=3, seed=6)
    shuffled = raw.sample(fraction=1.0, shuffle=True, seed=9)
    a, b = build_day(raw, DAY), build_day(shuffled, DAY)
    assert np.array_equal(bits(a.features), bits(b.features))
    assert np.array_equal(a.mask, b.mask) and np.array_equal(bits(a.labels), bits(b.labels))
    assert a.counts == b.counts


def test_labels_match_a_naive_loop():
    rng = np.random.default_rng(8)
    tids = [t for t in range(390) if t not in {30, 31, 150} and not 250 <= t < 262]
    mid = 30 * np.exp(np.cumsum(rng.normal(0, 1e-3, len(tids))))
    raw = bars(DAY, "A", tids, mid=mid)
    day = build_day(raw, DAY)
    by_t = dict(zip(tids, mid))
    mids, mask, last, last_t = [], [], None, None
    for t in range(390):
        if t in by_t:
            last, last_t = by_t[t], t
        mids.append(last)
        mask.append(last_t is not None and t - last_t <= MAX_QUOTE_AGE)
    mid_of = [((m - 0.01) + (m + 0.01)) / 2 for m in mids]
    ret, vol = np.full(390, np.nan), np.full(390, np.nan)
    for t in range(390):
        if t + 60 < 390 and mask[t] and mask[t + 60]:
            ret[t] = math.log(mid_of[t + 60]) - math.log(mid_of[t])
        if t + 10 < 390 and all(mask[t : t + 11]):
            vol[t] = math.sqrt(sum((math.log(mid_of[t + k]) - math.log(mid_of[t + k - 1])) ** 2 for k in range(1, 11)))
    assert np.array_equal(day.mask[0], np.array(mask))
    np.testing.assert_allclose(day.labels[0, :, 0], ret, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(day.labels[0, :, 1], vol, rtol=1e-5, atol=1e-8)
    assert np.isnan(ret).sum() > 60 and np.isnan(vol).sum() > 10  # the gaps matter


def test_symbols_argument_fixes_order_and_fills_absent_symbols():
    raw = random_raw(DAY, n_sym=3, seed=7)
    day = build_day(raw, DAY, symbols=["S2", "GONE", "S0"])
    assert day.symbols == ["S2", "GONE", "S0"]
    full = build_day(raw, DAY)
    assert np.array_equal(bits(day.features[[0, 2]]), bits(full.features[[2, 0]]))
    assert not day.mask[1].any() and np.isnan(day.labels[1]).all() and np.isfinite(day.features[1]).all()
    assert day.counts["unlisted_symbol"] == raw.filter(in_session(DAY) & (pl.col("symbol") == "S1")).height
    with pytest.raises(UsageError, match="more than once"):
        build_day(raw, DAY, symbols=["S0", "S0"])


def test_bad_frames_and_days_are_clear_errors():
    raw = bars(DAY, "A", range(5))
    with pytest.raises(DataError, match=r"x\.parquet.*'bid'"):
        build_day(raw.drop("bid"), DAY, source="x.parquet")
    with pytest.raises(DataError, match=r"'ts'.*time-zone aware"):
        build_day(raw.with_columns(pl.col("ts").dt.replace_time_zone(None)), DAY)
    with pytest.raises(DataError, match=r"'ask'.*numeric"):
        build_day(raw.with_columns(pl.col("ask").cast(pl.String)), DAY)
    with pytest.raises(DataError, match="not a trading day"):
        build_day(raw, dt.date(2024, 3, 9))
    with pytest.raises(DataError) as info:
        build_day(raw, dt.date(2024, 3, 13), source="x.parquet")
    assert str(info.value).startswith(
        "x.parquet: all 5 rows are outside the regular session of 2024-03-13, 09:30-16:00 America/New_York "
        "(13:30-20:00 UTC): first ts 2024-03-12T13:30:00+00:00 (2024-03-12 09:30 local), last ts "
        "2024-03-12T13:34:00+00:00 (2024-03-12 09:34 local). Are the timestamps UTC instants?"
    )
    with pytest.raises(DataError, match=r"x\.parquet: no rows for 2024-03-12; write the date's bars"):
        build_day(raw.clear(), DAY, source="x.parquet")
    with pytest.raises(DataError, match=r"none of the 5 rows of 2024-03-12 has both a symbol and a ts"):
        build_day(raw.with_columns(pl.lit(None, pl.String).alias("symbol")), DAY, source="x.parquet")
    with pytest.raises(DataError, match=r"the frame has \['Symbol', 'ts', 'Bid'.*rename Symbol->symbol, Bid->bid\."):
        build_day(raw.rename({"symbol": "Symbol", "bid": "Bid"}), DAY)
    empty = build_day(raw, dt.date(2024, 3, 13), symbols=["A"])  # an explicit universe: all-missing
    assert not empty.mask.any() and np.isfinite(empty.features).all()
    # optional columns may be absent; a zone other than UTC names the same instants
    lean = build_day(raw.drop("trade_count", "vwap"), DAY)
    assert (lean.features[0, :, col("log_trade_count")] == 0).all()
    ny = build_day(raw.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York")), DAY)
    assert np.array_equal(bits(ny.features), bits(build_day(raw, DAY).features))


# ---------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_speed_1000_symbols():
    rng = np.random.default_rng(0)
    n_sym, n_min = 1000, 390
    start, _ = session_bounds(DAY)
    mid = 50 * np.exp(np.cumsum(rng.normal(0, 1e-3, (n_sym, n_min)), axis=1)).ravel()
    volume = np.where(rng.random(mid.size) < 0.2, 0.0, 500.0)
    close = np.where(volume > 0, mid, np.nan)
    raw = pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:04d}" for i in range(n_sym)], n_min),
            "ts": np.tile(
                np.datetime64(start.replace(tzinfo=None), "us") + np.arange(n_min) * np.timedelta64(60, "s"), n_sym
            ),
            "bid": mid - 0.01,
            "ask": mid + 0.01,
            "bid_size": rng.integers(1, 40, mid.size) * 100.0,
            "ask_size": rng.integers(1, 40, mid.size) * 100.0,
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": volume,
        }
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"), pl.col("open", "high", "low", "close").fill_nan(None))
    raw = raw.filter(pl.Series(rng.random(raw.height) > 0.02))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        day = build_day(raw, DAY)
        best = min(best, time.perf_counter() - t0)
    print(f"\nbuild_day: {n_sym} symbols x {n_min} minutes x {len(FEATURE_NAMES)} features in {best:.2f} s (best of 3)")
    assert day.features.shape == (n_sym, n_min, 59) and np.isfinite(day.features).all()


def test_on_a_synthetic_day():
    synth = pytest.importorskip("tthf.engine.data.synth")
    day_ = dt.date(2024, 1, 3)
    raw = synth.generate_day(synth.SynthConfig(n_symbols=20, start=day_, end=day_), day_)
    day = build_day(raw, day_, source="synth")
    assert np.isfinite(day.features).all()
    assert day.mask.mean() > 0.95
    assert np.mean(~np.isnan(day.labels[..., 0])) > 0.75 and np.mean(~np.isnan(day.labels[..., 1])) > 0.9
    assert day.counts["extended_hours"] > 0
    # the planted effects show up in the features meant to carry them
    ok = day.mask & ~np.isnan(day.labels[..., 0])
    assert np.corrcoef(day.features[..., col("imbalance_ma15")][ok], day.labels[..., 0][ok])[0, 1] > 0.03
    ok = day.mask & ~np.isnan(day.labels[..., 1])
    assert np.corrcoef(day.features[..., col("rv_30")][ok], day.labels[..., 1][ok])[0, 1] > 0.3

"""The naive forecasts: the last-10-minute RV from raw mids, the EWMA's half-life, the same-minute mean."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from tthf.engine.data.calendar import session_minutes
from tthf.engine.evaluation import baselines
from tthf.engine.features import build_day


def test_last_rv_is_realized_vol_of_the_last_10_minutes_from_raw_mids() -> None:
    day = dt.date(2024, 3, 5)
    minutes = session_minutes(day)
    mid = 50.0 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 1e-3, len(minutes))))
    raw = pl.DataFrame(
        {
            "symbol": ["AAA"] * len(minutes),
            "ts": minutes,
            "bid": mid - 0.01,
            "ask": mid + 0.01,
            "bid_size": 300.0,
            "ask_size": 300.0,
            "open": mid,
            "high": mid + 0.02,
            "low": mid - 0.02,
            "close": mid,
            "volume": 1000.0,
        }
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    rv = baselines.last_rv(build_day(raw, day).labels[:, :, 1])[0]
    r = np.diff(np.log(mid))  # r[k-1] is the return into minute k
    want = np.array([math.sqrt(np.sum(r[t - 10 : t] ** 2)) for t in range(10, len(minutes))])
    assert np.isnan(rv[:10]).all()
    np.testing.assert_allclose(rv[10:], want, rtol=1e-5)


def test_ewma_reaches_halfway_after_one_half_life_and_keeps_state_over_gaps() -> None:
    h = baselines.EWMA_HALFLIFE
    rv = np.full((2, 200), np.nan, dtype=np.float32)
    rv[0, 20:100] = 1.0
    rv[0, 100:] = 2.0
    rv[1, 50:] = 3.0
    rv[1, 60:70] = np.nan  # no value for 10 minutes: the average is kept
    out = baselines.ewma_rv(rv)
    assert np.isnan(out[0, :20]).all() and np.isnan(out[1, :50]).all()
    np.testing.assert_allclose(out[0, 20:100], 1.0, rtol=1e-6)
    # variance 1 -> 4: after h updates, 4 - 3 * 0.5 = 2.5
    assert out[0, 100 + h - 1] == pytest.approx(math.sqrt(2.5), rel=1e-6)
    np.testing.assert_allclose(out[1, 50:], 3.0, rtol=1e-6)


def test_same_minute_averages_previous_days_by_symbol() -> None:
    day1 = (["A", "B"], np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]], dtype=np.float32))
    day2 = (["B", "C"], np.array([[5.0, 6.0], [7.0, 8.0]], dtype=np.float32))  # a half day: 2 minutes
    out = baselines.same_minute([day1, day2], ["B", "A", "D"], 3)
    np.testing.assert_allclose(out[0], [4.0, 5.0, 5.0])
    np.testing.assert_allclose(out[1, :2], [1.0, 2.0])
    assert np.isnan(out[1, 2]) and np.isnan(out[2]).all()
    assert np.isnan(baselines.same_minute([], ["A"], 3)).all()


def test_reversal_is_minus_the_last_30_minute_return() -> None:
    np.testing.assert_array_equal(baselines.reversal(np.array([[0.01, -0.02]])), np.array([[-0.01, 0.02]], np.float32))

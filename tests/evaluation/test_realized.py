"""Realized targets come from training's label code: the same arrays, and the design's formulas."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

from tthf.engine.data.calendar import session_minutes
from tthf.engine.data.marketdata import read_day, write_day
from tthf.engine.evaluation.realized import realized_day
from tthf.engine.features import build_day
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS, make_data


def test_realized_day_is_build_days_labels_and_ret_30(tmp_path) -> None:
    root = make_data(tmp_path / "data", n_symbols=3)
    store = open_store(root)
    real = realized_day(store, DAYS[1])
    feats = build_day(read_day(store, DAYS[1]), DAYS[1])
    np.testing.assert_array_equal(real.labels, feats.labels)
    np.testing.assert_array_equal(real.ret_30, feats.features[:, :, feats.feature_names.index("ret_30")])
    assert real.symbols == feats.symbols and (real.minutes == feats.minutes).all()
    assert real.counts["rows_in"] == feats.counts["rows_in"] > 0


def test_labels_follow_the_design_formulas(tmp_path) -> None:
    day = dt.date(2024, 3, 5)
    minutes = session_minutes(day)
    mid = 20.0 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 2e-3, len(minutes))))
    raw = pl.DataFrame(
        {
            "symbol": ["AAA"] * len(minutes),
            "ts": minutes,
            "bid": mid - 0.005,
            "ask": mid + 0.005,
            "bid_size": 100.0,
            "ask_size": 100.0,
            "open": mid,
            "high": mid,
            "low": mid,
            "close": mid,
            "volume": 10.0,
        }
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    write_day(str(tmp_path), day, raw)
    real = realized_day(open_store(tmp_path), day)
    t = 100
    assert math.isclose(real.labels[0, t, 0], math.log(mid[t + 60] / mid[t]), rel_tol=1e-6)
    r = np.diff(np.log(mid))
    assert math.isclose(real.vol[0, t], math.sqrt(np.sum(r[t : t + 10] ** 2)), rel_tol=1e-5)
    assert np.isnan(real.labels[0, -60:, 0]).all() and np.isnan(real.vol[0, -10:]).all()

"""Held-out metrics: exact values on hand-made inputs, the vol baseline from raw mids."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from tthf.engine.config import ModelConfig
from tthf.engine.data.calendar import session_minutes
from tthf.engine.features import build_day
from tthf.engine.training.dataset import ThreeHeadedTransformerDataset
from tthf.engine.training.metrics import compute_metrics, last_realized_vol

CFG = ModelConfig(n_features=3, ret_scale=2e-3, vol_scale=1e-3, ret_band=1e-3)


def test_perfect_predictor_has_zero_error() -> None:
    rng = np.random.default_rng(0)
    labels = np.stack([rng.normal(0, 2e-3, 500), rng.lognormal(-7, 0.5, 500)], axis=1).astype(np.float32)
    labels[:40, 0] = np.nan  # ret horizon past the close
    pred = np.concatenate([labels, np.ones((500, 2), np.float32)], axis=1)
    pred[:40, 0] = 0.0
    m = compute_metrics(pred, labels, labels[:, 1] * 1.5, CFG)
    assert m["ret_1h"]["n"] == 460 and m["vol_10m"]["n"] == 500
    assert m["ret_1h"]["model"]["mse"] == 0 and m["ret_1h"]["model"]["mae"] == 0
    assert m["ret_1h"]["model"]["ic"] == pytest.approx(1.0) and m["ret_1h"]["mse_skill"] == pytest.approx(1.0)
    assert m["vol_10m"]["model"]["mae"] == 0 and m["vol_10m"]["model"]["rmse"] == 0
    assert m["vol_10m"]["model"]["qlike"] == pytest.approx(0.0, abs=1e-12)
    assert m["vol_10m"]["baseline_last_rv"]["qlike"] == pytest.approx(1 / 1.5**2 - math.log(1 / 1.5**2) - 1)
    assert m["ret_1h"]["baseline_zero"]["mse"] == pytest.approx(float(np.nanmean(labels[:, 0].astype(np.float64) ** 2)))
    for key in ("ret_conf", "vol_conf"):
        assert m[key]["coverage"] == 1.0 and m[key]["mean_conf"] == 1.0
        assert m[key]["spearman_conf_vs_abs_err"] is None  # all errors are 0: undefined, written as null


def test_calibrated_confidence_is_reported_as_calibrated() -> None:
    """Errors drawn with the stated sigma: coverage matches the mean stated probability,
    and higher confidence has smaller errors."""
    rng = np.random.default_rng(1)
    n = 40_000
    sigma = rng.uniform(2e-4, 4e-3, n)
    labels = np.stack([rng.normal(0, sigma), np.full(n, 1e-3)], axis=1)
    pred = np.zeros((n, 4))
    pred[:, 1] = 1e-3
    pred[:, 2] = [math.erf(CFG.ret_band / (s * math.sqrt(2))) for s in sigma]
    pred[:, 3] = 0.5
    m = compute_metrics(pred, labels, np.full(n, 1e-3), CFG)["ret_conf"]
    assert m["coverage"] == pytest.approx(m["mean_conf"], abs=0.01)
    assert m["max_quintile_calibration_gap"] < 0.03
    assert m["spearman_conf_vs_abs_err"] < -0.3
    errs = [q["mean_abs_err"] for q in m["by_quintile"]]
    assert errs == sorted(errs, reverse=True) and [q["n"] for q in m["by_quintile"]] == [n // 5] * 5


def test_vol_baseline_is_realized_vol_of_the_last_10_minutes_from_raw_mids() -> None:
    day = dt.date(2024, 3, 5)
    minutes = session_minutes(day)
    rng = np.random.default_rng(2)
    mid = 50.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, len(minutes))))
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
    features = build_day(raw, day)
    ds = ThreeHeadedTransformerDataset([(features.features, features)], require_labels=False)
    assert len(ds) == len(minutes) - 29
    r = np.diff(np.log(mid))  # r[k-1] is the return into minute k
    t = ds.index.minute.astype(int)
    want = np.array([math.sqrt(np.sum(r[i - 10 : i] ** 2)) for i in t])
    np.testing.assert_allclose(last_realized_vol(ds), want, rtol=1e-5)

"""Splits with a purge gap, the training loop, and complete runs from a synthetic market."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_dataset import random_day

from tthf.engine import runs
from tthf.engine.config import ModelConfig, RunConfig, TrainConfig
from tthf.engine.data.calendar import trading_days
from tthf.engine.data.marketdata import list_dates, read_day, write_day
from tthf.engine.data.synth import SynthConfig, generate_market
from tthf.engine.features import build_day
from tthf.engine.features.scalers import Scalers
from tthf.engine.model.network import load_checkpoint
from tthf.engine.testing import NO_QUOTE_SYMBOL, with_null_quotes
from tthf.engine.training.dataset import ThreeHeadedTransformerDataset
from tthf.engine.training.metrics import predict
from tthf.engine.training.train import _val_loss, fit, split_dates, train_run
from tthf.errors import StoreError, UsageError

DATES = trading_days(dt.date(2024, 1, 2), dt.date(2024, 3, 28))
TINY = {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32}


@pytest.mark.parametrize("n", [5, 6, 13, 40, len(DATES)])
@pytest.mark.parametrize("purge", [0, 1, 2])
def test_splits_are_time_ordered_with_a_purge_gap(n: int, purge: int) -> None:
    cfg = TrainConfig(purge_days=purge)
    dates = DATES[:n]
    if n < 3 + 2 * purge:
        with pytest.raises(UsageError, match="too few"):
            split_dates(dates, cfg)
        return
    s = split_dates(list(reversed(dates)) + dates[:2], cfg)  # order and duplicates do not matter
    iso = [d.isoformat() for d in dates]
    assert s.train + s.purged[:purge] + s.val + s.purged[purge:] + s.test == iso
    assert len(s.purged) == 2 * purge and s.train and s.val and s.test
    assert len(s.test) == max(1, round(n * cfg.test_frac)) and len(s.val) == max(1, round(n * cfg.val_frac))
    pos = {d: i for i, d in enumerate(iso)}
    for a, b in ((s.train, s.val), (s.val, s.test), (s.train, s.test)):
        assert pos[b[0]] - pos[a[-1]] > purge  # no date within purge_days of another split


def tiny_days(n: int, seed: int = 0) -> list[tuple[np.ndarray, object]]:
    return [(d.features, d) for d in (random_day(seed + i, n_sym=6, n_min=120) for i in range(n))]


def tiny_cfg(**changes) -> tuple[ModelConfig, TrainConfig]:
    return ModelConfig(n_features=4, **TINY), TrainConfig(
        **{"epochs": 2, "batch_size": 64, "train_stride": 2, **changes}
    )


def test_fit_is_deterministic_given_the_seed() -> None:
    days = tiny_days(3)
    model_cfg, train_cfg = tiny_cfg()
    before = torch.random.get_rng_state()
    a, ha = fit(days[:2], days[2:], model_cfg, train_cfg)
    b, hb = fit(days[:2], days[2:], model_cfg, train_cfg)
    c, _ = fit(days[:2], days[2:], model_cfg, dataclasses.replace(train_cfg, seed=1))
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name])
    assert any(not torch.equal(t, c.state_dict()[k]) for k, t in a.state_dict().items())
    assert [e["val_loss"] for e in ha.epochs] == [e["val_loss"] for e in hb.epochs]
    assert not a.training


def test_early_stopping_restores_the_best_epoch() -> None:
    days = tiny_days(3)
    model_cfg, _ = tiny_cfg()
    # lr = 0: the validation loss never improves after epoch 1, so patience 1 stops at epoch 2
    model, history = fit(days[:2], days[2:], model_cfg, tiny_cfg(lr=0.0, epochs=5, patience=1)[1])
    assert history.stopped_early and len(history.epochs) == 2 and history.best_epoch == 1
    # a real fit: whatever epoch was best, the returned weights are that epoch's
    model, history = fit(days[:2], days[2:], model_cfg, tiny_cfg(lr=2e-2, epochs=4, patience=4)[1])
    val = ThreeHeadedTransformerDataset(days[2:], stride=2)
    assert sum(_val_loss(model, val, 256)) == pytest.approx(history.best_val_loss, rel=1e-5)
    assert history.best_val_loss == min(e["val_loss"] for e in history.epochs)


@pytest.fixture(scope="module")
def tiny_market(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("market")
    generate_market(SynthConfig(n_symbols=8, start=dt.date(2024, 1, 2), end=dt.date(2024, 1, 9)), root)
    return str(root)


def test_train_run_writes_a_complete_run_that_loads_and_predicts(tiny_market: str, tmp_path) -> None:
    store = str(tmp_path / "runs")
    result = train_run(tiny_market, store, "jennifer", overrides={"epochs": 1, "threads": 1, **TINY})
    run = runs.Run.open(runs.find_run(store, "jen"))
    assert sorted(run.store.list("")) == sorted([runs.CONFIG, runs.CHECKPOINT, runs.SCALERS, runs.METRICS])
    cfg = run.config
    assert cfg == RunConfig.from_json(run.read_text(runs.CONFIG))
    assert cfg.train.epochs == 1 and cfg.model.d_model == 16 and cfg.data_root == tiny_market
    assert cfg.splits.train and cfg.splits.val and cfg.splits.test and len(cfg.splits.purged) == 2
    assert cfg.model.ret_scale > 0 and cfg.model.vol_scale > 0 and cfg.model.ret_band > 0

    model = load_checkpoint(run.read_bytes(runs.CHECKPOINT), cfg.model)
    scalers = Scalers.from_json(run.read_text(runs.SCALERS))
    day = dt.date.fromisoformat(cfg.splits.test[0])
    features = build_day(read_day(tiny_market, day), day)
    ds = ThreeHeadedTransformerDataset(
        [(scalers.transform_day(features, cfg.feature_names), features)], require_labels=False
    )
    pred = predict(model, ds)
    np.testing.assert_array_equal(pred, predict(result.model, ds))
    assert np.isfinite(pred).all() and (pred[:, 1] > 0).all() and ((pred[:, 2:] >= 0) & (pred[:, 2:] <= 1)).all()

    metrics = json.loads(run.read_text(runs.METRICS))
    test = metrics["test"]
    assert test["dates"] == cfg.splits.test and test["n_windows"] == len(ds)
    assert set(test) >= {"ret_1h", "vol_10m", "ret_conf", "vol_conf"}
    assert test["ret_1h"]["baseline_zero"]["mse"] > 0 and test["vol_10m"]["baseline_last_rv"]["qlike"] > 0
    assert metrics["training"]["best_epoch"] == 1

    with pytest.raises(StoreError, match="already exists.*--overwrite"):
        train_run(tiny_market, store, "jennifer", overrides={"epochs": 1})


def test_unknown_or_derived_settings_are_usage_errors(tiny_market: str, tmp_path) -> None:
    for bad in ({"epoch": 2}, {"ret_scale": 0.1}):
        with pytest.raises(UsageError, match="unknown training setting"):
            train_run(tiny_market, str(tmp_path), "x", overrides=bad)


@pytest.mark.slow
def test_cli_trains_and_prints_the_metrics_table(tiny_market: str, tmp_path) -> None:
    env = {**os.environ, "TTHF_STORE": str(tmp_path / "runs")}
    cmd = [
        sys.executable,
        "-m",
        "tthf.cli.train",
        "--run",
        "cli",
        "--data",
        tiny_market,
        "--epochs",
        "1",
        "--threads",
        "1",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "held-out test" in done.stdout and "last rv" in done.stdout and "mse skill vs zero" in done.stdout
    assert f"written to {tmp_path / 'runs'}" in done.stdout
    assert "epoch 1/1" in done.stderr
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == StoreError.exit_code and "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def _rewrite(src: str, dst: Path, **null_quotes: Any) -> str:
    """Every date of ``src`` with null quotes planted (``tthf.engine.testing.with_null_quotes``)."""
    for day in list_dates(src):
        write_day(str(dst), day, with_null_quotes(read_day(src, day), **null_quotes))
    return str(dst)


@pytest.mark.slow
def test_null_quotes_and_a_symbol_without_quotes_train_like_the_other_symbols_alone(tiny_market: str, tmp_path) -> None:
    """Every date is used; the quote-less symbol adds no window: the run is the one trained without it."""
    settings = {"epochs": 1, "max_train_windows": 2000, "threads": 1, **TINY}
    runs_dir = str(tmp_path / "runs")
    with_symbol = train_run(_rewrite(tiny_market, tmp_path / "nulls"), runs_dir, "nulls", overrides=settings)
    without = train_run(_rewrite(tiny_market, tmp_path / "ref", no_quote=False), runs_dir, "ref", overrides=settings)
    a, b = with_symbol.run, without.run
    splits = a.config.splits
    used = splits.train + splits.val + splits.test + splits.purged
    assert sorted(used) == [d.isoformat() for d in list_dates(tiny_market)]
    assert a.read_bytes(runs.CHECKPOINT) == b.read_bytes(runs.CHECKPOINT)
    assert a.read_text(runs.SCALERS) == b.read_text(runs.SCALERS)
    assert with_symbol.metrics["test"] == without.metrics["test"] and with_symbol.metrics["test"]["n_windows"] > 0
    day = dt.date.fromisoformat(splits.test[0])
    feats = build_day(read_day(tmp_path / "nulls", day), day)
    assert NO_QUOTE_SYMBOL in feats.symbols and feats.counts["symbols_no_quote"] == 1
    assert feats.counts["quote_null"] > feats.counts["rows_used"] // 7

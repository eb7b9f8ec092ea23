"""The benchmarks' baseline (bench/baseline/) computes what tthf computes.

A speed ratio means something only at the same answers: the pandas features match
``build_day`` feature by feature, and the whole baseline pipeline (pandas, Dataset /
DataLoader, eager model, process pool) writes the same predictions as ``tthf-run``.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # the baseline lives beside the benchmarks

from baseline import build_features, run_baseline
from baseline.parity import compare

from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.features import build_day
from tthf.engine.runs import open_run
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions
from tthf.engine.testing import DAYS, make_data, make_run


@pytest.fixture(scope="module")
def day_pair():
    cfg = SynthConfig(n_symbols=30, start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 5), seed=5)
    day = cfg.days[0]
    raw = generate_day(cfg, day)
    tthf = build_day(raw, day)
    return tthf, build_features(raw.to_pandas(), day)


def test_features_match_per_feature(day_pair) -> None:
    tthf, (symbols, frame, mask) = day_pair
    assert sorted(frame.columns) == sorted(tthf.feature_names)
    parity = compare(tthf.features, tthf.mask, tthf.symbols, tthf.feature_names, symbols, frame, mask)
    assert parity.symbols_equal and parity.mask_equal
    bad = parity.beyond_tolerance()
    assert not bad, f"features differ beyond tolerance (relative to max(1, |x|), baseline/parity.py): {bad}"


def test_cleaning_drops_what_tthf_drops() -> None:
    """Extended hours, off-minute and crossed quotes: the same grid and the same mask."""
    cfg = SynthConfig(
        n_symbols=5, start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 1), seed=9, crossed_rate=0.05, zero_quote_rate=0.05
    )
    day = cfg.days[0]
    raw = generate_day(cfg, day).to_pandas()
    raw = pd.concat([raw, raw.iloc[:50]], ignore_index=True)  # exact duplicates are dropped
    raw.loc[3, "ts"] += pd.Timedelta(seconds=7)  # an off-minute row is dropped
    tthf = build_day(pl.from_pandas(raw), day)
    symbols, frame, mask = build_features(raw, day)
    parity = compare(tthf.features, tthf.mask, tthf.symbols, tthf.feature_names, symbols, frame, mask)
    assert parity.symbols_equal and parity.mask_equal
    assert not parity.beyond_tolerance(), parity.max_err


@pytest.mark.slow
def test_predictions_match_tthf_run(tmp_path: Path) -> None:
    data = make_data(tmp_path / "market", n_symbols=6)
    run = make_run(str(tmp_path / "store"), data)
    run_inference(open_run(str(tmp_path / "store"), "jennifer"), RunOptions(dates=f"{DAYS[1]}:{DAYS[2]}", dense=True))
    results = run_baseline(run.ref.uri, data, DAYS[1:], tmp_path / "baseline", processes=2)
    assert [r.date for r in results] == [d.isoformat() for d in DAYS[1:]]
    for day, result in zip(DAYS[1:], results):
        ours = pd.read_csv(run.ref.uri + f"/inference/{day}.csv")
        base = pd.read_csv(result.file)
        assert list(base.columns) == list(ours.columns)
        assert len(base) == len(ours) == result.rows
        assert (base[["ts", "symbol", "source_ts"]].to_numpy() == ours[["ts", "symbol", "source_ts"]].to_numpy()).all()
        for name in ("ret_1h", "vol_10m", "ret_conf", "vol_conf"):
            np.testing.assert_allclose(
                base[name].to_numpy(), ours[name].to_numpy(), rtol=1e-4, atol=1e-6, err_msg=f"{day} {name}"
            )

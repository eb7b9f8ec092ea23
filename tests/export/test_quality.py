"""Forecast quality at export: the held-out set and its labels, the bars, and a variant rejected by them.

Stand-in backends (``ScaledStandIn``: ONNX Runtime on ``model.onnx``, outputs scaled) run on every
CPU; one registered as an int8 variant whose forecasts are off is rejected with the numbers,
and the export still succeeds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import torch

from tthf.engine import runs
from tthf.engine.artifacts import Manifest
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data.marketdata import read_day
from tthf.engine.features import build_day
from tthf.engine.model.interface import Outputs
from tthf.engine.runtime.backends import REGISTRY
from tthf.engine.runtime.backends.base import BackendSpec, Needs
from tthf.engine.testing import ScaledStandIn, make_data, make_run
from tthf.export import api, quality
from tthf.export.config import ExportConfig


def test_a_bar_allows_what_it_states_and_no_more() -> None:
    absolute, relative = quality.QualityBar(absolute=0.005), quality.QualityBar(relative=0.01)
    assert absolute.allows(0.10, 0.104) and not absolute.allows(0.10, 0.106)
    assert relative.allows(0.80, 0.807) and not relative.allows(0.80, 0.81)
    assert relative.allows(-0.80, -0.807) and not relative.allows(-0.80, -0.81)


def test_judge_names_each_score_that_moved_past_its_bar() -> None:
    fp32 = {name: 0.5 for name in quality.QUALITY_BARS}
    assert quality.judge(fp32, dict(fp32), 100)["failed"] == ""
    moved = {**fp32, "ret_1h_ic": 0.51, "vol_10m_qlike": 0.5 * 1.02}
    record = quality.judge(fp32, moved, 100)
    assert "ret_1h_ic" in record["failed"] and "vol_10m_qlike" in record["failed"]
    assert "rank_ic" not in record["failed"] and record["scores"]["ret_1h_ic"]["delta"] == pytest.approx(0.01)
    # undefined for fp32 (too few labels): not judged, not failed
    assert quality.judge({**fp32, "ret_1h_ic": None}, fp32, 1)["scores"]["ret_1h_ic"]["passed"] is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> runs.Run:
    base = tmp_path_factory.mktemp("quality")
    return make_run(str(base / "store"), make_data(base / "data"))


def test_the_quality_set_is_test_dates_windows_with_their_labels(tiny: runs.Run) -> None:
    qs = quality.quality_set(tiny, 300, seed=1)
    assert qs.dates == tiny.config.splits.test and 0 < len(qs) <= 300
    assert qs.labels.shape == (len(qs), 2) and qs.last_rv.shape == (len(qs),)
    # every window's labels are the day's labels at some valid window end with exactly these inputs
    cfg = tiny.config
    date = dt.date.fromisoformat(cfg.splits.test[0])
    day = build_day(read_day(cfg.data_root, date, calendar=cfg.calendar), date, calendar=cfg.calendar)
    scaled = tiny.load_scalers().transform_day(day, cfg.feature_names)
    x0 = qs.x[0]
    ends = [(s, m) for s in range(scaled.shape[0]) for m in range(cfg.seq_len - 1, scaled.shape[1])
            if np.array_equal(scaled[s, m - cfg.seq_len + 1 : m + 1], x0)]  # fmt: skip
    assert ends and any(np.array_equal(day.labels[s, m], qs.labels[0], equal_nan=True) for s, m in ends)


def test_fp32_against_itself_passes_and_a_shifted_confidence_fails(tiny: runs.Run) -> None:
    judge = quality.Judge(tiny, 400, None, seed=0)
    qs, fp32, _ = judge.reference
    assert qs is not None and set(fp32) == set(quality.QUALITY_BARS)

    class _Same:
        def predict(self, x: np.ndarray) -> Outputs:
            with torch.no_grad():
                return {n: t.numpy() for n, t in zip(OUTPUT_NAMES, tiny.load_model()(torch.from_numpy(x)))}

    class _Overconfident(_Same):
        def predict(self, x: np.ndarray) -> Outputs:
            out = super().predict(x)
            return {**out, "ret_conf": np.minimum(out["ret_conf"] + np.float32(0.05), 1)}

    assert judge(_Same())["failed"] == ""  # type: ignore[arg-type]
    assert "ret_conf_calibration_gap" in judge(_Overconfident())["failed"]  # type: ignore[arg-type]


class _Int8Off(ScaledStandIn):
    scale = 0.9  # every output 10% low: volatility forecasts too low, confidences too


INT8_OFF = _Int8Off.spec = BackendSpec(
    "openvino-int8", _Int8Off, precision="int8", device="cpu", needs=Needs(("onnxruntime",), runs.FP32_ONNX),
    optional=True,
)  # fmt: skip


def test_an_int8_variant_with_worse_forecasts_is_rejected_and_the_export_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(str(tmp_path / "store"), make_data(tmp_path / "data"))
    monkeypatch.setitem(REGISTRY, INT8_OFF.name, INT8_OFF)  # as if int8 were 10% off
    result = api.export_run(run, ExportConfig(real_windows=256, random_batches=(16,), quality_windows=2000))
    record = Manifest.read(run).variants["openvino-int8"]
    assert record["status"] == "rejected" and "forecast quality: " in record["reason"]
    judged = record["quality"]
    assert judged["windows"] > 0 and judged["dates"] == run.config.splits.test
    assert not judged["scores"]["vol_10m_qlike"]["passed"] and "vol_10m_qlike" in judged["failed"]
    assert "openvino-int8 rejected" in result.variants_line()
    assert run.exists(runs.export_key(runs.FP32_ONNX))  # the export went on


def test_without_held_out_data_the_variant_says_it_was_not_judged(tiny: runs.Run, tmp_path: Path) -> None:
    from tthf.engine.store import as_store

    disabled = quality.Judge(tiny, 0, None, seed=0)(None)  # type: ignore[arg-type]
    assert disabled["not_judged"] == "disabled with --quality-windows 0" and disabled["failed"] == ""
    empty = quality.Judge(tiny, 100, as_store(str(tmp_path / "nothing")), seed=0)(None)  # type: ignore[arg-type]
    assert empty["windows"] == 0 and "nothing" in empty["not_judged"]


def test_a_run_without_raw_bars_is_judged_on_the_labels_of_its_feature_files(tiny: runs.Run, tmp_path: Path) -> None:
    """A file-only run (every feature and its ``[labels]`` from feature files; its data root holds no raw bars)
    is judged: the labels are the files' columns, at the windows' last minute."""
    import dataclasses
    import shutil

    import polars as pl

    from tthf.engine.config import FeatureFiles

    cfg = tiny.config
    root = tmp_path / "features"
    root.mkdir()
    for iso in cfg.splits.test:
        date = dt.date.fromisoformat(iso)
        day = build_day(read_day(cfg.data_root, date, calendar=cfg.calendar), date, calendar=cfg.calendar)
        s, m = len(day.symbols), len(day.minutes)
        features = {n: day.features[..., day.feature_names.index(n)].reshape(-1) for n in cfg.feature_names}
        pl.DataFrame(
            {
                "symbol": np.repeat(day.symbols, m),
                "ts": pl.Series(np.tile(day.minutes, s)).dt.replace_time_zone("UTC"),
                **{n: v.astype(np.float64) for n, v in features.items()},
                "real_ret": np.tile(np.arange(m, dtype=np.float64), s) * 1e-4,  # the minute: findable
                "real_vol": np.repeat(np.arange(s, dtype=np.float64), m) * 1e-3 + 1e-3,  # the symbol
            }
        ).write_parquet(root / f"{iso}.parquet")
    shutil.copytree(Path(tiny.ref.uri).parents[2], tmp_path / "store")
    files = FeatureFiles(str(root), list(cfg.feature_names), labels={"ret_1h": "real_ret", "vol_10m": "real_vol"})
    copy = runs.open_run(str(tmp_path / "store"), tiny.ref.run_id)
    copy.write_text("config.json", dataclasses.replace(cfg, data_root=str(root), feature_files=files).to_json())
    run = runs.open_run(str(tmp_path / "store"), tiny.ref.run_id)
    qs = quality.quality_set(run, 300, seed=1)
    assert 0 < len(qs) <= 300 and qs.dates == cfg.splits.test
    # each window's ret label is the file's at its last minute (a window end), its vol label its symbol's, so
    # the last-10-minute RV (the vol label 10 minutes earlier) equals it
    minute = qs.labels[:, 0] * 1e4
    assert np.allclose(minute, np.round(minute), atol=1e-3) and minute.min() >= cfg.seq_len - 1.001
    ok = np.isfinite(qs.last_rv)
    assert ok.any() and np.array_equal(qs.last_rv[ok], qs.labels[ok, 1])
    record = quality.Judge(run, 300, None, seed=0)(quality.reference_backend(run))
    assert "not_judged" not in record and record["windows"] == len(qs) and record["failed"] == ""

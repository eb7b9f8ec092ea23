"""tthf-eval on labels from feature files (an import's ``[labels]``): the same labels score the same, and a
baseline the files cannot give is reported absent with its reason, never as a number."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tthf.cli import eval as eval_cli
from tthf.engine.config import FeatureFiles
from tthf.engine.data.marketdata import read_day
from tthf.engine.evaluation.evaluate import evaluate_run
from tthf.engine.evaluation.realized import NO_RET_30, NO_VOL_LABEL, realized_from_files
from tthf.engine.features import build_day
from tthf.engine.runs import Run, open_run
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS

pytestmark = pytest.mark.slow

LABELS = {"ret_1h": "real_ret", "vol_10m": "real_vol"}


def write_label_files(data: Path, root: Path, days: list[dt.date]) -> Path:
    """Per date, training's labels of the raw bars under ``data`` as the label columns of a feature file."""
    root.mkdir(parents=True, exist_ok=True)
    for day in days:
        feats = build_day(read_day(str(data), day), day)
        s, m = len(feats.symbols), len(feats.minutes)
        pl.DataFrame(
            {
                "symbol": np.repeat(feats.symbols, m),
                "ts": pl.Series(np.tile(feats.minutes, s)).dt.replace_time_zone("UTC"),
                "real_ret": feats.labels[..., 0].reshape(-1).astype(np.float64),
                "real_vol": feats.labels[..., 1].reshape(-1).astype(np.float64),
            }
        ).write_parquet(root / f"{day}.parquet")
    return root


def with_file_labels(tiny_run, tmp_path: Path, labels: dict[str, str]) -> Run:
    """A copy of the tiny run whose labels come from feature files (the raw bars stay its data root)."""
    store = tmp_path / "store"
    shutil.copytree(tiny_run.store, store)
    run = open_run(str(store), tiny_run.run_id)
    root = write_label_files(tiny_run.data, tmp_path / "features", DAYS)
    files = FeatureFiles(root=str(root), columns=[], labels=labels)
    run.write_text("config.json", dataclasses.replace(run.config, feature_files=files).to_json())
    return open_run(str(store), tiny_run.run_id)


def test_file_labels_score_as_the_raw_bars_and_the_reversal_baseline_is_absent_not_zero(
    tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = evaluate_run(open_run(tiny_run.store, tiny_run.run_id), tiny_run.predicted, name="raw").metrics
    run = with_file_labels(tiny_run, tmp_path, LABELS)
    assert eval_cli.main(["--store", str(tmp_path / "store"), "--run", run.ref.run_id, "--dates", tiny_run.predicted,
                          "--name", "files"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    m = json.loads(run.read_text("evaluation/files/metrics.json"))
    assert m["data_root"] == str(tmp_path / "features")
    # the same labels: the model's scores and the vol baselines (built from the vol_10m labels) are the raw run's
    assert m["ret_1h"]["model"]["ic"]["mean"] == pytest.approx(raw["ret_1h"]["model"]["ic"]["mean"], rel=1e-9)
    for key in ("model", "baseline_last_rv", "baseline_ewma_rv", "baseline_same_minute"):
        assert m["vol_10m"][key]["qlike"] == pytest.approx(raw["vol_10m"][key]["qlike"], rel=1e-9), key
    # the reversal needs ret_30, which the files do not carry: absent with the reason, in every output
    assert raw["baselines_absent"] == {} and raw["ret_1h"]["baseline_reversal"]["ic"]["mean"] is not None
    assert m["baselines_absent"] == {"baseline_reversal": NO_RET_30}
    reversal = m["ret_1h"]["baseline_reversal"]
    assert reversal["absent"] == NO_RET_30 and reversal["ic"]["mean"] is None and reversal["hit_rate"] is None
    assert set(reversal["deciles"]) == {None} and all(r["reversal_ic"] is None for r in m["per_date"])
    assert "reversal IC absent" in out and f"baselines absent (reversal): {NO_RET_30}" in out
    page = run.read_text("evaluation/files/report.html")
    assert "Baselines absent" in page and "carry no ret_30" in page
    assert "Baselines absent" not in open_run(tiny_run.store, tiny_run.run_id).read_text("evaluation/raw/report.html")


def test_without_a_vol_10m_label_column_the_vol_baselines_are_absent(tiny_run, tmp_path: Path) -> None:
    run = with_file_labels(tiny_run, tmp_path, {"ret_1h": "real_ret"})
    m = evaluate_run(run, tiny_run.predicted, name="ret_only").metrics
    assert m["vol_10m"]["n"] == 0 and m["ret_1h"]["n"] > 0
    for key in ("baseline_last_rv", "baseline_ewma_rv", "baseline_same_minute"):
        assert m["baselines_absent"][key] == NO_VOL_LABEL and m["vol_10m"][key]["absent"] == NO_VOL_LABEL
    files = run.config.feature_files
    assert files is not None
    real = realized_from_files(files, open_store(files.root), DAYS[1])
    assert np.isnan(real.ret_30).all() and np.isnan(real.vol).all() and np.isfinite(real.labels[..., 0]).any()

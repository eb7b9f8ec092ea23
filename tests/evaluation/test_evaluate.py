"""evaluate_run on real prediction files: outputs, missing dates, sparse files, training's numbers, S3."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tthf.engine import runs
from tthf.engine.data.marketdata import read_day
from tthf.engine.evaluation.evaluate import evaluate, evaluate_run, prediction_formats
from tthf.engine.evaluation.panel import build_panel
from tthf.engine.evaluation.realized import realized_day
from tthf.engine.evaluation.report import FIGURES
from tthf.engine.features import build_day
from tthf.engine.predictions import decode
from tthf.engine.runs import open_run
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS, make_run
from tthf.errors import StoreError, UsageError

pytestmark = pytest.mark.slow

SPEC = f"{DAYS[0]}:2024-01-05"  # day 0 has data but no predictions; 2024-01-05 is a trading day without data


def test_writes_metrics_report_and_figures_and_reports_missing_dates(tiny_run) -> None:
    seen = []
    result = evaluate(tiny_run.store, "jen", SPEC, on_date=seen.append)
    assert [(o.date, o.status) for o in result.outcomes] == [
        ("2024-01-02", "no_predictions"),
        ("2024-01-03", "scored"),
        ("2024-01-04", "scored"),
        ("2024-01-05", "no_data"),
    ]
    assert sorted(o.date for o in seen) == [o.date for o in result.outcomes] and result.exit_code == 0
    assert result.name == "2024-01-02_to_2024-01-05"
    folder = open_store(result.uri)
    assert sorted(folder.list()) == sorted(["metrics.json", "report.html", *(name for name, _, _ in FIGURES)])
    for name, _, _ in FIGURES:
        assert folder.read_bytes(name)[:8] == b"\x89PNG\r\n\x1a\n"
    m = json.loads(folder.read_text("metrics.json"))
    assert m["dates"]["scored"] == ["2024-01-03", "2024-01-04"]
    assert m["dates"]["no_predictions"] == ["2024-01-02"] and m["dates"]["no_data"] == ["2024-01-05"]
    assert m["mode"] == "dense" and m["step_minutes"] == 1 and m["ret_1h"]["hac_lags"] == 60
    assert m["forecasts"] == m["rows"] == sum(r["rows"] for r in m["per_date"])
    ic = m["ret_1h"]["model"]["ic"]
    assert -1 < ic["mean"] < 1 and ic["se_hac"] > ic["se_naive"]  # overlapping labels
    assert len(m["ret_1h"]["model"]["deciles"]) == 10 and len(m["ret_conf"]["by_decile"]) == 10
    assert m["vol_10m"]["model"]["mz"]["n"] == m["vol_10m"]["n"] > 0
    assert m["training_check"] is None  # the random run has no metrics.json


def test_pooled_block_reproduces_training_heldout_metrics(tiny_run) -> None:
    """Training's own evaluate() on the predicted dates, written as the run's metrics.json, is matched."""
    from tthf.engine.training.metrics import evaluate as training_evaluate

    run = runs.open_run(tiny_run.store, tiny_run.run_id)
    model, scalers = run.load_model(), run.load_scalers()
    days = [build_day(read_day(str(tiny_run.data), d), d) for d in DAYS[1:]]
    test = training_evaluate(model, [(scalers.transform_day(d, run.config.feature_names), d) for d in days])
    run.write_text(runs.METRICS, json.dumps({"test": test}))
    try:
        result = evaluate_run(run, tiny_run.predicted, name="heldout")
    finally:
        run.store.delete(runs.METRICS)
    check = result.metrics["training_check"]
    assert check["same_dates"] and check["max_rel_diff"] < 1e-4
    assert {r["key"] for r in check["rows"] if r["training"] is None} == set()
    pooled = result.metrics["pooled"]
    assert pooled["ret_1h"]["n"] == test["ret_1h"]["n"] and pooled["vol_10m"]["n"] == test["vol_10m"]["n"]


def test_sparse_predictions_score_once_per_forecast_at_source_ts(tiny_run) -> None:
    from tthf.engine.runtime.batch import run_inference
    from tthf.engine.runtime.options import RunOptions

    make_run(tiny_run.store, tiny_run.data, "sparse")  # same seed: the dense run's weights
    run_inference(
        open_run(tiny_run.store, "sparse"), RunOptions(dates=tiny_run.predicted, sample_every=10, backend="torch")
    )
    sparse = runs.Run.open(runs.find_run(tiny_run.store, "sparse"))
    result = evaluate_run(sparse, tiny_run.predicted)
    m = result.metrics
    assert m["mode"] == "sparse" and m["step_minutes"] == 10
    assert m["ret_1h"]["hac_lags"] == 6 and m["vol_10m"]["hac_lags"] == 1
    assert m["forecasts"] < m["rows"]
    dense = runs.Run.open(runs.find_run(tiny_run.store, tiny_run.run_id))
    real = realized_day(open_store(tiny_run.data), DAYS[1])
    panels = [
        build_panel(decode(r.read_bytes(runs.output_key(DAYS[1], "csv")), "csv"), real, []) for r in (sparse, dense)
    ]
    s, d = panels
    assert s.forecasts == s.has.sum() and (s.has <= d.has).all()
    np.testing.assert_allclose(s.flat("ret_1h"), d.grids["ret_1h"][s.has], rtol=1e-5, atol=1e-7)
    frame = decode(sparse.read_bytes(runs.output_key(DAYS[1], "csv")), "csv")
    assert s.forecasts == frame.filter(frame["ts"] == frame["source_ts"]).height


def test_no_predictions_at_all_and_bad_names_are_clear_errors(tiny_run) -> None:
    with pytest.raises(StoreError, match="no predictions to score .* tthf-run --run jennifer"):
        evaluate(tiny_run.store, "jennifer", str(DAYS[0]))
    with pytest.raises(UsageError, match="invalid --name"):
        evaluate(tiny_run.store, "jennifer", tiny_run.predicted, name="../x")


def test_with_both_formats_the_one_the_manifest_names_is_scored(tiny_run, tmp_path, caplog) -> None:
    from tthf.engine.runtime.batch import run_inference
    from tthf.engine.runtime.options import RunOptions

    run = make_run(str(tmp_path), tiny_run.data, "both")
    for fmt in ("parquet", "csv", "parquet"):  # the last call's format is the manifest's
        run_inference(
            open_run(str(tmp_path), "both"), RunOptions(dates=str(DAYS[2]), fmt=fmt, overwrite=True, backend="torch")
        )
    run.write_bytes("inference/2024-01-05.json", b"{}")  # not a predictions format
    assert prediction_formats(run) == {DAYS[2]: "parquet"}
    run.write_text(runs.INFERENCE_MANIFEST, "{}")  # a manifest that does not load: CSV first, with a warning
    assert prediction_formats(run) == {DAYS[2]: "csv"} and "missing key(s)" in caplog.text
    run.store.delete(runs.INFERENCE_MANIFEST)
    run.store.delete(runs.output_key(DAYS[2], "csv"))
    assert prediction_formats(run) == {DAYS[2]: "parquet"}


@pytest.mark.s3
def test_run_store_on_s3(tiny_run, s3_bucket) -> None:
    from tthf.engine.runtime.batch import run_inference
    from tthf.engine.runtime.options import RunOptions

    make_run(s3_bucket, tiny_run.data)
    run_inference(
        open_run(s3_bucket, "jennifer"), RunOptions(dates=str(DAYS[2]), dense=True, backend="torch", fmt="parquet")
    )
    result = evaluate(s3_bucket, "jennifer", str(DAYS[2]), name="s3")
    assert result.uri.startswith("s3://") and result.uri.endswith("/evaluation/s3")
    folder = open_store(result.uri)
    assert "report.html" in folder.list() and folder.read_text("report.html").startswith("<!DOCTYPE html>")
    assert json.loads(folder.read_text("metrics.json"))["dates"]["scored"] == [str(DAYS[2])]

"""tthf-eval --compare: two prediction sets of the same dates, their score and row differences."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from tthf.engine import predictions, runs
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.evaluation.compare import RowDifferences, compare_run, score_differences
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS
from tthf.errors import UsageError


def _frame(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "ts": np.arange(n, dtype=np.int64),
            "symbol": [f"S{i % 7}" for i in range(n)],
            **{name: rng.standard_normal(n).astype(np.float32) for name in OUTPUT_NAMES},
        }
    )


def test_row_differences_find_a_changed_value_and_the_rows_of_one_set_only() -> None:
    base = _frame(1000)
    acc = RowDifferences()
    acc.add("2024-01-03", base, base)
    same = acc.summary()
    assert same["matched_rows"] == 1000 and all(v["max_abs"] == 0 == v["p99_abs"] for v in same["outputs"].values())
    other = base.with_columns(pl.when(pl.col("ts") == 5).then(pl.col("ret_1h") + 0.5).otherwise(pl.col("ret_1h")))
    other = other.filter(pl.col("ts") != 7).vstack(_frame(1002)[1000:].with_columns(pl.col("ts") + 5000))
    acc = RowDifferences()
    acc.add("2024-01-03", base, other)
    got = acc.summary()
    assert (got["matched_rows"], got["only_base_rows"], got["only_other_rows"]) == (999, 1, 2)
    assert got["outputs"]["ret_1h"]["max_abs"] == pytest.approx(0.5, rel=1e-6)
    assert got["outputs"]["ret_1h"]["p99_abs"] <= 1e-10  # one row of 999 is above the 99th percentile
    assert all(got["outputs"][n]["max_abs"] == 0 for n in OUTPUT_NAMES if n != "ret_1h")


def test_the_pooled_p99_bounds_the_exact_one_within_six_percent() -> None:
    rng = np.random.default_rng(1)
    base = _frame(20000)
    acc = RowDifferences()
    diffs = []
    for day in range(3):  # pooled over dates of different spreads
        noise = rng.standard_normal(20000).astype(np.float32) * 10.0 ** (-4 + day)
        other = base.with_columns(pl.col("vol_10m") + noise)
        diffs.append(np.abs(other["vol_10m"].to_numpy().astype(np.float64) - base["vol_10m"].to_numpy()))
        acc.add(f"d{day}", base, other)
    exact = float(np.percentile(np.concatenate(diffs), 99))
    got = acc.p99("vol_10m")
    assert exact <= got <= exact * 1.06
    assert acc.max["vol_10m"] == pytest.approx(max(d.max() for d in diffs))


def test_score_differences_are_other_minus_base_for_every_number() -> None:
    base = {"ret_1h": {"model": {"ic": {"mean": 0.02, "t": 3}}, "by_minute": {"x": [1, 2]}}, "vol_10m": {"qlike": 1.0}}
    other = {"ret_1h": {"model": {"ic": {"mean": 0.015, "t": 2}}}, "vol_10m": {"qlike": None}}
    for m in (base, other):
        m.update(ret_conf={}, vol_conf={})
    rows = {r["score"]: r for r in score_differences(base, other)}
    assert rows["ret_1h.model.ic.mean"]["difference"] == pytest.approx(-0.005)
    assert rows["vol_10m.qlike"]["difference"] is None and "ret_1h.by_minute.x" not in rows


@pytest.mark.slow
def test_compare_scores_both_sets_and_writes_one_report(tiny_run, capsys) -> None:
    from tthf.cli.eval import main
    from tthf.engine.runtime.batch import run_inference
    from tthf.engine.runtime.options import RunOptions

    run = runs.open_run(tiny_run.store, tiny_run.run_id)
    options = RunOptions(dates=tiny_run.predicted, dense=True, backend="torch", predictions="b")
    assert [r.status for r in run_inference(run, options).results] == ["ok", "ok"]
    key = runs.output_key(DAYS[1], "csv", "b")
    frame = predictions.decode(run.read_bytes(key), "csv")
    first = frame["ts"][0], frame["symbol"][0]
    changed = (pl.col("ts") == first[0]) & (pl.col("symbol") == first[1])
    frame = frame.with_columns(pl.when(changed).then(pl.col("vol_10m") * 2).otherwise(pl.col("vol_10m")))
    run.write_bytes(key, predictions.encode(frame.slice(0, frame.height - 1), "csv"))  # and one row dropped

    result = compare_run(run, tiny_run.predicted, "default", "b", name="cmp")
    c = json.loads(open_store(result.uri).read_text("comparison.json"))
    assert c["dates"]["both"] == [d.isoformat() for d in DAYS[1:]] and c["rows"]["only_base_rows"] == 1
    assert c["rows"]["only_other_rows"] == 0 and c["rows"]["outputs"]["vol_10m"]["max_abs"] > 0
    assert c["rows"]["outputs"]["ret_1h"]["max_abs"] == 0  # torch twice: the same numbers
    assert result.base.metrics["predictions"] == "default" and result.other.metrics["predictions"] == "b"
    assert result.other.name.endswith("_b") and result.name == "cmp"
    assert "Prediction sets compared: b against default" in open_store(result.uri).read_text("report.html")

    argv = ["--run", "jen", "--store", tiny_run.store, "--dates", tiny_run.predicted, "--compare", "b"]
    assert main([*argv, "--name", "cmp-cli"]) == 0
    out = capsys.readouterr().out
    assert "comparison cmp-cli: b against default on 2 date(s)" in out and "1 only in default" in out
    with pytest.raises(UsageError, match="that is the set being scored"):
        compare_run(run, tiny_run.predicted, "b", "b")

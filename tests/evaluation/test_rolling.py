"""``tthf-eval --rolling``: each date scored once into the history, reruns replace, the files redrawn."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tthf.cli.eval import main
from tthf.engine.evaluation.history import read_history
from tthf.engine.evaluation.rolling import new_dates
from tthf.engine.runs import HISTORY_METRICS, HISTORY_PAGE, open_run
from tthf.engine.testing import DAYS


@pytest.fixture()
def store(tiny_run, tmp_path: Path) -> str:
    """A copy of the shared run store, so that its history starts empty here."""
    return str(shutil.copytree(tiny_run.store, tmp_path / "runs"))


@pytest.mark.slow
def test_new_dates_once_and_reruns_replace(store: str, capsys: pytest.CaptureFixture) -> None:
    run = open_run(store, "jennifer")
    args = ["--store", store, "--run", "jennifer", "--rolling"]
    assert new_dates(run) == DAYS[1:]  # predicted, not scored yet
    assert main([*args, "--dates", "new", "--min-ic", "0.9", "--alert-dates", "2"]) == 0
    out = capsys.readouterr().out
    assert f"recorded {DAYS[1]} scored, {DAYS[2]} scored; it holds 2 scored and 0 failed dates" in out
    assert f"ALERT ret_ic: beyond its threshold on each of the last 2 dates ({DAYS[1]}..{DAYS[2]})" in out
    assert new_dates(run) == []
    assert main([*args, "--dates", "new"]) == 0
    assert "history rolling: nothing new to score" in capsys.readouterr().out
    before = read_history(run)
    # an explicit rerun over all three dates (the first has no predictions): the two rows replaced, none added
    assert main([*args, "--dates", f"{DAYS[0]}:{DAYS[2]}"]) == 0
    after = read_history(run)
    assert after.height == 2 and after["date"].to_list() == DAYS[1:]
    assert (after["scored_at"] > before["scored_at"]).all()
    assert after.drop("scored_at", "min_ic", "alert_dates").equals(before.drop("scored_at", "min_ic", "alert_dates"))
    assert after["min_ic"].is_null().all()  # the rerun's thresholds (none) are what the rows record now
    families = {f.name: f for f in text_string_to_metric_families(run.read_text(HISTORY_METRICS))}
    ic = families["tthf_eval_ret_ic"].samples[0]
    assert ic.labels == {"run": run.ref.name, "evaluation": "rolling"}
    assert ic.value == pytest.approx(after.filter(pl.col("date") == DAYS[2])["ret_ic"][0])
    assert {s.labels["metric"]: s.value for s in families["tthf_eval_alert"].samples} == {
        "ret_ic": 0,
        "qlike_excess": 0,
        "coverage_gap": 0,
    }
    assert "How the model is doing" in run.read_text(HISTORY_PAGE)


def test_new_without_rolling_is_a_usage_error(store: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["--store", store, "--run", "jennifer", "--dates", "new"]) == 2
    assert "add --rolling" in capsys.readouterr().err

"""The rolling record's rows, their key, the thresholds and the alerts."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

from tthf.engine.evaluation.history import (
    Thresholds,
    alerts,
    empty,
    failed_row,
    merge,
    scored_row,
)
from tthf.errors import UsageError

NONE = Thresholds()


def per_date(day: str, ic: float = 0.05, **over: float) -> dict:
    paired = {
        "baseline_last_rv": {"n": 10, "model": 0.30, "baseline": 0.35},
        "baseline_ewma_rv": {"n": 10, "model": 0.30, "baseline": 0.32},
        "baseline_same_minute": {"n": 0, "model": None, "baseline": None},  # no previous day
    }
    row = {
        "date": day,
        "rows": 100,
        "forecasts": 90,
        "ic": ic,
        "rank_ic": ic / 2,
        "hit_rate": 0.52,
        "vol_qlike": 0.31,
        "ret_coverage": 0.70,
        "ret_mean_conf": 0.60,
        "vol_coverage": 0.50,
        "vol_mean_conf": 0.55,
        "vol_qlike_paired": paired,
    }
    return {**row, **over}


BAND = {"ret_conf": True, "vol_conf": True}


def test_scored_row_takes_the_best_baseline_on_its_cells_and_the_gaps() -> None:
    row = scored_row(per_date("2024-03-05"), evaluation="rolling", settings="k", band=BAND, thresholds=NONE)
    assert row["best_baseline"] == "baseline_ewma_rv" and row["baseline_qlike"] == 0.32
    assert math.isclose(row["qlike_excess"], -0.02) and math.isclose(row["ret_coverage_gap"], 0.10)
    assert math.isclose(row["vol_coverage_gap"], -0.05) and row["ret_ic"] == 0.05 and row["status"] == "scored"
    score = scored_row(
        per_date("2024-03-05"),
        evaluation="r",
        settings="k",
        band={"ret_conf": False, "vol_conf": True},
        thresholds=NONE,
    )
    assert score["ret_coverage_gap"] is None and score["vol_coverage_gap"] is not None  # a score kind has no gap


def test_a_date_is_one_row_per_evaluation_whatever_the_reruns() -> None:
    first = [
        scored_row(per_date(d), evaluation="rolling", settings="k", band=BAND, thresholds=NONE)
        for d in ("2024-03-05", "2024-03-06")
    ]
    history = merge(empty(), first)
    failed = failed_row("2024-03-06", evaluation="rolling", reason="boom", settings="k", thresholds=NONE)
    history = merge(history, [failed])
    history = merge(
        history,
        [scored_row(per_date("2024-03-06", ic=0.2), evaluation="other", settings="k", band=BAND, thresholds=NONE)],
    )
    assert history.height == 3
    assert history.select("date", "evaluation", "status").rows() == [
        (dt.date(2024, 3, 5), "rolling", "scored"),
        (dt.date(2024, 3, 6), "other", "scored"),
        (dt.date(2024, 3, 6), "rolling", "failed"),
    ]
    assert merge(history, first).filter(pl.col("evaluation") == "rolling")["status"].to_list() == ["scored", "scored"]


def test_alerts_need_every_one_of_the_last_dates_to_breach() -> None:
    levels = Thresholds(min_ic=0.02, max_qlike_excess=0.0, max_coverage_gap=0.08, dates=3)
    ics = {"2024-03-04": 0.01, "2024-03-05": 0.01, "2024-03-06": -0.01, "2024-03-07": 0.0}
    rows = [
        scored_row(per_date(d, ic), evaluation="rolling", settings="k", band=BAND, thresholds=levels)
        for d, ic in ics.items()
    ]
    history = merge(empty(), rows)
    warned = alerts(history, "rolling", levels)
    # IC below 0.02 on each of the last three; the ret coverage gap of 0.10 too; QLIKE beats the baseline
    assert warned == {
        "ret_ic": [dt.date(2024, 3, d) for d in (5, 6, 7)],
        "coverage_gap": [dt.date(2024, 3, d) for d in (5, 6, 7)],
    }
    good = scored_row(
        per_date("2024-03-08", 0.05, ret_coverage=0.6), evaluation="rolling", settings="k", band=BAND, thresholds=levels
    )
    assert alerts(merge(history, [good]), "rolling", levels) == {}  # one good date ends both
    failed = failed_row("2024-03-08", evaluation="rolling", reason="x", settings="k", thresholds=levels)
    assert "ret_ic" in alerts(merge(history, [failed]), "rolling", levels)  # a failed date neither ends nor starts one
    assert alerts(history, "rolling", Thresholds(min_ic=0.02, dates=5)) == {}  # fewer dates than asked
    assert alerts(history, "rolling", NONE) == {}


def test_thresholds_are_checked() -> None:
    with pytest.raises(UsageError, match="alert-dates"):
        Thresholds(dates=0)
    with pytest.raises(UsageError, match="max-coverage-gap"):
        Thresholds(max_coverage_gap=-0.1)

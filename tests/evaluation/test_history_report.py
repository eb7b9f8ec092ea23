"""The history page as a person sees it, from a made-up record of 30 dates whose model decays.

The browser test needs Debian's ``chromium`` and Playwright, as tests/evaluation/test_report.py;
it keeps a full-page screenshot, ``tthf-eval-history.png``, in ``$TTHF_ARTIFACTS`` or ``./artifacts/``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from browser import artifacts, needs_chromium, render

from tthf.engine.data.calendar import trading_days
from tthf.engine.evaluation import array_scores
from tthf.engine.evaluation.history import Thresholds, alerts, empty, failed_row, merge, scored_row
from tthf.engine.evaluation.history_report import figures, hac_lags, prometheus_text, render_html, rolling_ic

LEVELS = Thresholds(min_ic=0.01, max_qlike_excess=0.0, max_coverage_gap=0.08, dates=4)
DATES = trading_days(dt.date(2024, 2, 1), dt.date(2024, 3, 14))[:30]
FAILED = DATES[12]


def decaying() -> pl.DataFrame:
    """IC from 0.06 down to -0.02 with noise, QLIKE worse than the baseline from date 24 on, ret coverage drifting."""
    rng = np.random.default_rng(0)
    rows = []
    for i, day in enumerate(DATES):
        if day == FAILED:
            rows.append(
                failed_row(str(day), evaluation="rolling", reason="no column 'ask'", settings="k", thresholds=LEVELS)
            )
            continue
        ic = 0.06 - 0.08 * i / 29 + rng.normal(0, 0.01)
        paired = {"baseline_ewma_rv": {"n": 100, "model": 0.30 + 0.004 * max(0, i - 23), "baseline": 0.30}}
        per_date = {
            "date": str(day),
            "rows": 39_000,
            "forecasts": 3_900,
            "ic": ic,
            "rank_ic": ic * 0.9,
            "hit_rate": 0.5 + ic,
            "vol_qlike": 0.31,
            "ret_coverage": 0.68 - 0.004 * i,
            "ret_mean_conf": 0.62,
            "vol_coverage": 0.55,
            "vol_mean_conf": 0.57,
            "vol_qlike_paired": paired,
        }
        band = {"ret_conf": True, "vol_conf": True}
        rows.append(scored_row(per_date, evaluation="rolling", settings="k", band=band, thresholds=LEVELS))
    return merge(empty(), rows)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    history = decaying()
    warned = alerts(history, "rolling", LEVELS)
    path = tmp_path_factory.mktemp("history") / "history.html"
    path.write_text(
        render_html(
            history, "demo/three_headed_transformer/jennifer", "rolling", warned, figures(history, "rolling", warned)
        )
    )
    return path


def test_the_decay_is_an_alert_on_ic_and_qlike_not_on_coverage() -> None:
    warned = alerts(decaying(), "rolling", LEVELS)
    assert set(warned) == {"ret_ic", "qlike_excess"} and warned["ret_ic"] == DATES[-4:]


def test_rolling_ic_band_is_the_hac_interval_of_the_window() -> None:
    scored = decaying().filter(pl.col("status") == "scored")
    roll = rolling_ic(scored, window=10)
    last = scored["ret_ic"].to_numpy()[-10:]
    test = array_scores.mean_test(last, hac_lags(10))
    assert roll["mean"][-1] == pytest.approx(last.mean())
    assert roll["high"][-1] - roll["low"][-1] == pytest.approx(2 * 1.96 * test["se_hac"])
    naive = 2 * 1.96 * last.std(ddof=1) / np.sqrt(10)
    assert not np.isclose(roll["high"][-1] - roll["low"][-1], naive)  # HAC, not the i.i.d. interval
    assert np.isnan(roll["low"][0]) and roll["mean"][0] == pytest.approx(scored["ret_ic"][0])  # one date: no band


def test_page_is_self_contained_and_says_alert(page: Path) -> None:
    text = page.read_text()
    assert "<script" not in text and not re.findall(r'(?:src|href)="(?!data:)', text)
    assert len(re.findall(r'<img alt="history_\w+\.png" src="data:image/png;base64,', text)) == 3
    assert "<strong>ALERT</strong>" in text and "ret IC beyond its threshold on each of the last 4 dates" in text
    assert f"<td>{FAILED}</td><td>failed</td>" in text and "no column &#x27;ask&#x27;" in text


def test_prometheus_text_has_the_latest_numbers() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    history = decaying()
    text = prometheus_text(history, "r", "rolling", alerts(history, "rolling", LEVELS)).decode()
    values = {
        s.name + s.labels.get("metric", "") + s.labels.get("status", ""): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert values["tthf_eval_ret_ic"] == pytest.approx(history["ret_ic"][-1])
    assert values["tthf_eval_alertret_ic"] == 1 and values["tthf_eval_alertcoverage_gap"] == 0
    assert values["tthf_eval_datesfailed"] == 1 and values["tthf_eval_datesscored"] == 29


@pytest.mark.slow
@needs_chromium
def test_history_page_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    shot = artifacts(tmp_path) / "tthf-eval-history.png"
    banner_colour = "getComputedStyle(document.querySelector('.alert')).borderColor"
    problems, images, banner = render(page, shot, probe=banner_colour)
    assert problems == []
    assert len(images) == 3 and all(i["ok"] and i["w"] > 500 for i in images), images
    assert banner == "rgb(192, 57, 43)"
    assert shot.stat().st_size > 100_000

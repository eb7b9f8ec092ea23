"""Which cells go into which score: the pooled QLIKE next to the date-by-date contest of the rolling history."""

from __future__ import annotations

import datetime as dt

import numpy as np

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.evaluation.panel import BASELINES, TARGETS, DatePanel
from tthf.engine.evaluation.panel_scores import Bands, score_date, summarize

BANDS = Bands(ret_band=0.01, vol_band=0.2231, vol_floor=1e-5)
M, S = 30, 8


def _panel(day: int, rng: np.random.Generator, stuck: bool) -> DatePanel:
    """A dense date where the EWMA is close to the realized value and the model 40% high; with ``stuck``,
    one symbol's EWMA is 0 (no move since the open) just before its price moves: the floored cells."""
    y = rng.uniform(5e-4, 2e-3, (M, S)).astype(np.float32)
    grids = {name: rng.normal(0, 1e-3, (M, S)).astype(np.float32) for name in (*OUTPUT_NAMES, *TARGETS, *BASELINES)}
    grids["y_vol"], grids["vol_10m"] = y, 1.4 * y
    grids["last_rv"], grids["same_minute"] = 2.0 * y, 0.5 * y
    grids["ewma_rv"] = 1.05 * y
    if stuck:
        grids["ewma_rv"][:3, 0] = 0.0
    has = np.ones((M, S), bool)
    date = dt.date(2024, 3, day)
    return DatePanel(date, np.arange(M), [f"S{i}" for i in range(S)], grids, has, M * S, M * S, 0, 1)


def test_one_floored_stretch_decides_the_pooled_qlike_but_not_the_dates() -> None:
    rng = np.random.default_rng(3)
    days = [score_date(_panel(d, rng, stuck=d == 8), BANDS) for d in (4, 5, 6, 7, 8)]
    vol = summarize(days, BANDS)["vol_10m"]
    # pooled over all cells, three floored EWMA cells of one date (0.25% of the cells) make the model win ...
    assert vol["model"]["qlike"] < vol["baseline_ewma_rv"]["qlike"]
    # ... while the EWMA has the lower QLIKE on four of the five dates, and the lower median
    ewma = vol["by_date"]["baseline_ewma_rv"]
    assert (ewma["dates"], ewma["model_lower"]) == (5, 1)
    assert ewma["baseline_median"] < ewma["model_median"]
    # the by-date numbers are the rows' vol_qlike_paired, the rolling history's
    paired = [d.row["vol_qlike_paired"]["baseline_ewma_rv"] for d in days]
    assert ewma["baseline_median"] == np.median([p["baseline"] for p in paired])
    assert vol["by_date"]["baseline_last_rv"]["model_lower"] == 5  # 2x too high loses to 1.4x every date
    assert vol["by_date"]["baseline_same_minute"]["model_lower"] == 5  # 2x too low loses to it too


def test_a_baseline_without_cells_has_no_dates() -> None:
    rng = np.random.default_rng(4)
    panel = _panel(4, rng, stuck=False)
    panel.grids["same_minute"][:] = np.nan  # no previous day
    vol = summarize([score_date(panel, BANDS)], BANDS)["vol_10m"]
    assert vol["by_date"]["baseline_same_minute"] == {
        "dates": 0,
        "model_lower": 0,
        "model_median": None,
        "baseline_median": None,
    }
    assert vol["by_date"]["baseline_ewma_rv"]["dates"] == 1

"""Predictions on the realized grid: dense rows as they are, sparse rows once per forecast at source_ts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from tthf.engine.data.calendar import session_minutes
from tthf.engine.evaluation.panel import build_panel
from tthf.engine.evaluation.realized import RealizedDay

DAY = dt.date(2024, 3, 5)


def _realized() -> RealizedDay:
    minutes = session_minutes(DAY)
    rng = np.random.default_rng(0)
    labels = rng.normal(0, 1e-3, (3, len(minutes), 2)).astype(np.float32)
    labels[:, :, 1] = np.abs(labels[:, :, 1])
    return RealizedDay(
        DAY, ["AAA", "BBB", "CCC"], minutes, labels, rng.normal(0, 1e-3, (3, len(minutes))).astype(np.float32)
    )


def _frame(symbols: list[str], ts: list[int], source: list[int], minutes: np.ndarray) -> pl.DataFrame:
    n = len(symbols)

    def when(idx: list[int]) -> pl.Series:
        return pl.Series(minutes[np.asarray(idx)]).dt.replace_time_zone("UTC")

    return pl.DataFrame(
        {
            "ts": when(ts),
            "symbol": symbols,
            "ret_1h": np.arange(n, dtype=np.float32) * 1e-4,
            "vol_10m": np.full(n, 1e-3, np.float32),
            "ret_conf": np.full(n, 0.5, np.float32),
            "vol_conf": np.full(n, 0.4, np.float32),
            "source_ts": when(source),
        }
    )


def test_dense_rows_land_on_their_cells_and_strangers_are_counted() -> None:
    real = _realized()
    frame = _frame(["AAA", "BBB", "ZZZ", "CCC"], [29, 30, 31, 40], [29, 30, 31, 40], real.minutes)
    panel = build_panel(frame, real, [])
    assert (panel.rows, panel.forecasts, panel.unmatched, panel.step, panel.sparse) == (4, 4, 1, 1, False)
    assert panel.has.sum() == 3 and panel.has[29, 0] and panel.has[30, 1] and panel.has[40, 2]
    assert panel.grids["ret_1h"][30, 1] == np.float32(1e-4)
    assert panel.grids["y_ret"][40, 2] == real.labels[2, 40, 0]
    assert panel.grids["reversal"][29, 0] == -real.ret_30[0, 29]
    for name, grid in panel.grids.items():  # every grid is NaN off the forecast cells
        assert np.isnan(grid[~panel.has]).all(), name
    assert np.isnan(panel.grids["same_minute"][panel.has]).all()  # no previous day


def test_sparse_rows_score_once_at_their_source_ts() -> None:
    real = _realized()
    ts = list(range(29, 49))
    source = [29] * 10 + [39] * 10
    panel = build_panel(_frame(["AAA"] * 20, ts, source, real.minutes), real, [(["AAA"], np.ones((1, 390)))])
    assert (panel.rows, panel.forecasts, panel.step, panel.sparse) == (20, 2, 10, True)
    assert list(np.nonzero(panel.has[:, 0])[0]) == [29, 39]
    np.testing.assert_array_equal(panel.flat("y_ret"), real.labels[0, [29, 39], 0])
    np.testing.assert_array_equal(panel.flat("ret_1h"), np.arange(20, dtype=np.float32)[[0, 10]] * np.float32(1e-4))
    np.testing.assert_array_equal(panel.flat("same_minute"), [1.0, 1.0])

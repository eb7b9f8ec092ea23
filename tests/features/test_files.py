"""Feature-file columns on the session grid: the fill rules, per symbol along the day, and where a symbol's day starts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from tthf.engine.data.calendar import session_minutes
from tthf.engine.features.files import file_grid, fill

NAN = np.nan
DAY = dt.date(2024, 1, 2)


def test_each_fill_rule_per_symbol_and_a_late_symbol_masked_until_its_first_row() -> None:
    values = np.array([[[1.0], [NAN], [NAN], [4.0]], [[NAN], [NAN], [2.0], [NAN]]])  # (S=2, M=4, F=1)
    present = np.array([[True, True, False, True], [False, False, True, True]])
    ffilled, mask = fill(values, "ffill_then_zero", present)
    assert ffilled[..., 0].tolist() == [[1, 1, 1, 4], [0, 0, 2, 2]] and ffilled.dtype == np.float32
    assert mask.tolist() == [[True] * 4, [False, False, True, True]]  # the second symbol starts at minute 2
    zeroed, mask = fill(values, "zero", present)
    assert zeroed[..., 0].tolist() == [[1, 0, 0, 4], [0, 0, 2, 0]]
    kept, mask = fill(values, "none", present)
    assert mask.tolist() == [[True, False, False, True], [False, False, True, False]]
    assert np.isnan(kept[0, 1, 0]) and values[0, 1, 0] != values[0, 1, 0]  # the input is not changed
    with pytest.raises(ValueError, match="fill 'mean'"):
        fill(values, "mean", present)


def test_rows_land_in_their_session_minute_and_the_rest_is_counted() -> None:
    minutes = session_minutes(DAY).astype("datetime64[us]")
    ts = pl.Series(np.array([minutes[0], minutes[5] + np.timedelta64(30, "s"), minutes[0] - np.timedelta64(1, "h")]))
    rows = pl.DataFrame({"symbol": ["B", "A", "A"], "ts": ts.dt.replace_time_zone("UTC"), "x": [1.0, None, 3.0]})
    grid = file_grid(rows, DAY, ["x"])
    assert grid.symbols == ["A", "B"] and grid.values.shape == (2, len(minutes), 1)
    assert grid.present[0, 5] and grid.present[1, 0] and grid.present.sum() == 2  # 12:05:30 is minute 5
    assert grid.counts["file_outside_session"] == 1 and grid.counts["file_null_values"] == 1
    only_b = file_grid(rows, DAY, ["x"], symbols=["B"])
    assert only_b.symbols == ["B"] and only_b.counts["file_unlisted_symbol"] == 1

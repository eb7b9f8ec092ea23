"""Feature-file columns on the session grid: the fill rules, per symbol along the day, and where a symbol's day starts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from tthf.engine.data.calendar import session_minutes
from tthf.engine.features.clean import Session
from tthf.engine.features.files import Carry, FileDayGrid, file_grid, fill, fill_minutes, scaled_files
from tthf.engine.features.scalers import Scalers

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


@pytest.mark.parametrize("rule", ["ffill_then_zero", "zero", "none"])
def test_filling_minute_by_minute_from_the_carry_gives_the_bits_of_the_whole_day(rule: str) -> None:
    rng = np.random.default_rng(1)
    values = rng.standard_normal((4, 30, 3))
    values[rng.random(values.shape) < 0.3] = NAN
    present = rng.random((4, 30)) < 0.7
    present[2, :12] = False  # a symbol that starts late
    whole, mask = fill(values, rule, present)
    parts, masks, carry = [], [], None
    for a, b in ((0, 1), (1, 7), (7, 8), (8, 30)):
        part, part_mask, carry = fill_minutes(values[:, a:b], rule, present[:, a:b], carry)
        parts.append(part)
        masks.append(part_mask)
    assert np.array_equal(np.concatenate(parts, axis=1), whole, equal_nan=True)
    assert np.array_equal(np.concatenate(masks, axis=1), mask)
    # a carry from elsewhere (another symbol's) gives other values: the comparison can fail
    assert carry is not None
    wrong = Carry(carry.last[::-1].copy(), carry.started[::-1].copy())
    moved, _, _ = fill_minutes(values[:, 8:], rule, present[:, 8:], wrong)
    if rule == "ffill_then_zero":
        assert not np.array_equal(moved, whole[:, 8:], equal_nan=True)


def test_the_real_time_file_grid_equals_batch_with_late_rows_corrections_and_repeats() -> None:
    minutes = pl.Series(session_minutes(DAY)).dt.replace_time_zone("UTC")
    rng = np.random.default_rng(2)
    rows = pl.DataFrame(
        {"symbol": ["A", "B", "C"] * 40, "ts": minutes[np.repeat(np.arange(40), 3)], "x": rng.standard_normal(120)}
    ).filter(~((pl.col("symbol") == "C") & (pl.col("ts") < minutes[9])))  # C starts late
    rows = rows.with_columns(pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("x")).alias("x"))
    scalers = Scalers(("x",), np.array([0.5]), np.array([2.0]), 100)
    grid = FileDayGrid(Session.of(DAY), ["x"], "ffill_then_zero", scalers)
    held = (pl.col("symbol") == "B") & (pl.col("ts") == minutes[5])
    for m in range(30):
        grid.add(rows.filter((pl.col("ts") == minutes[m]) & ~held))
        grid.inputs(m)
    wrong = rows.filter(pl.col("ts") == minutes[20]).with_columns(pl.col("x") + 1)
    nulls = wrong["x"].null_count()  # a null plus one is null: the same row again
    tid, _, counts = grid.add(pl.concat([rows.filter(held), wrong, rows.filter(pl.col("ts") == minutes[21])]))
    assert counts["corrections"] == 3 - nulls and counts["duplicate_rows"] == 3 + nulls
    assert sorted(tid.tolist()) == [5] + [20] * (3 - nulls)  # the late cell and the corrected ones
    grid.add(rows.filter(pl.col("ts") == minutes[20]))  # corrected back
    grid.inputs(39)  # filled ahead: the rows of 30.. below are late for it and refill the day
    for m in range(30, 40):
        grid.add(rows.filter(pl.col("ts") == minutes[m]))
    got, got_mask = grid.inputs(39)
    batch = file_grid(rows, DAY, ["x"])
    want, want_mask = scaled_files(batch, "ffill_then_zero", scalers, ["x"])
    order = [grid.sid[s] for s in batch.symbols]
    assert np.array_equal(got[order], want[:, :40]) and np.array_equal(got_mask[order], want_mask[:, :40])

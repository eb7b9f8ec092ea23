"""Dense/sparse assembly of prediction rows and their file encoding."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tthf.engine import predictions
from tthf.engine.config import OUTPUT_NAMES

SEQ = 3


def _positions(mask: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Naive loop over the window rule (the oracle for this test)."""
    sym, minute = [], []
    for s in range(mask.shape[0]):
        for t in range(SEQ - 1, mask.shape[1], stride):
            if mask[s, t - SEQ + 1 : t + 1].all():
                sym.append(s)
                minute.append(t)
    return np.array(sym, dtype=np.int32), np.array(minute, dtype=np.int32)


def _assemble(mask: np.ndarray, stride: int) -> pl.DataFrame:
    minutes = np.datetime64("2024-01-02T14:30", "us") + np.arange(mask.shape[1]) * np.timedelta64(60, "s")
    sampled = _positions(mask, stride)
    # Each output encodes its window's position, so the test can tell which window filled a row.
    code = (sampled[0] * 1000 + sampled[1]).astype(np.float32)
    outputs = {name: code + i / 10 for i, name in enumerate(OUTPUT_NAMES)}
    return predictions.assemble(
        ["AAA", "BBB"], minutes, _positions(mask, 1), sampled, outputs, seq_len=SEQ, stride=stride
    )


@pytest.fixture
def mask() -> np.ndarray:
    m = np.ones((2, 20), dtype=bool)
    m[1, 8] = False  # BBB halted at minute 8: windows ending 8..10 are invalid
    return m


def test_dense_has_one_row_per_valid_window_sorted_by_ts_then_symbol(mask: np.ndarray) -> None:
    dense = _assemble(mask, 1)
    assert dense.columns == list(predictions.COLUMNS)
    assert dense.height == 18 + 15
    assert dense.sort("ts", "symbol").equals(dense)
    assert (dense["ts"] == dense["source_ts"]).all()
    assert dense.filter(pl.col("symbol") == "BBB")["ts"].dt.minute().to_list() == [
        32,
        33,
        34,
        35,
        36,
        37,
        *list(range(41, 50)),
    ]


def test_sparse_rows_equal_dense_at_sampled_minutes_and_fill_from_the_last_sample(mask: np.ndarray) -> None:
    dense, sparse = _assemble(mask, 1), _assemble(mask, 4)
    keys = ["ts", "symbol"]
    assert sparse.select(keys).join(dense.select(keys), on=keys, how="anti").height == 0  # subset of dense
    sampled = sparse.filter(pl.col("ts") == pl.col("source_ts"))
    assert sampled.height > 0
    assert sampled.equals(dense.join(sampled.select(keys), on=keys, how="semi"))
    filled = sparse.filter(pl.col("ts") != pl.col("source_ts"))
    lag = (filled["ts"] - filled["source_ts"]).dt.total_minutes()
    assert lag.min() >= 1 and lag.max() <= 3
    # The value of a filled row is the prediction made at its source minute.
    src_minute = (filled["source_ts"].dt.minute() - 30).cast(pl.Int64)
    sym = (filled["symbol"] == "BBB").cast(pl.Int64)
    assert (filled["ret_1h"].cast(pl.Int64) == sym * 1000 + src_minute).all()


def test_sparse_fill_never_reaches_past_an_invalid_scheduled_window(mask: np.ndarray) -> None:
    sparse = _assemble(mask, 4)
    bbb = sparse.filter(pl.col("symbol") == "BBB")
    # Samples at minutes 2, 6, 10, 14, 18: minute 10's window covers the halt, so 11..13 have no row.
    minutes = (bbb["ts"].dt.minute() - 30).to_list()
    assert minutes == [2, 3, 4, 5, 6, 7, 14, 15, 16, 17, 18, 19]


@pytest.mark.parametrize("fmt", predictions.FORMATS)
def test_encode_decode_round_trip_is_exact_and_deterministic(mask: np.ndarray, fmt: str) -> None:
    frame = _assemble(mask, 4)
    data = predictions.encode(frame, fmt)
    assert data == predictions.encode(frame, fmt)
    back = predictions.decode(data, fmt)
    assert back.equals(frame)


def test_unknown_format_is_rejected(mask: np.ndarray) -> None:
    with pytest.raises(ValueError, match="csv"):
        predictions.encode(_assemble(mask, 1), "xlsx")

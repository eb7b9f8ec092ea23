"""The outputs file beside the journal: restored at a journal prefix's tag, None whenever it cannot vouch for it."""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tthf.engine import predictions
from tthf.engine.runtime.outputlog import OutputLog, outputs_path, read_outputs

DAY = dt.date(2024, 1, 3)
START = dt.datetime(2024, 1, 3, 14, 30, tzinfo=dt.timezone.utc)
MARK = 1234.5  # a value found in the file's bytes, to damage it


def _rows(minute: int, value: float, symbols: tuple[str, ...] = ("A", "B")) -> pl.DataFrame:
    ts = np.array([np.datetime64(START.replace(tzinfo=None) + dt.timedelta(minutes=minute), "us")] * len(symbols))
    outputs = {name: np.full(len(symbols), value, np.float32) for name in ("ret_1h", "vol_10m", "ret_conf", "vol_conf")}
    return predictions.table(ts, pl.Series("symbol", symbols), outputs, ts)


def _withdrawn(minute: int, symbol: str) -> pl.DataFrame:
    return _rows(minute, 0.0, (symbol,)).with_columns(pl.lit(None, pl.Float32).alias("ret_1h"))


@pytest.fixture
def written(tmp_path: Path) -> Path:
    """A day: two minutes, a revision of the first, a withdrawal, then a call after the tag a restart holds."""
    log = OutputLog(outputs_path(tmp_path, DAY))
    log.open(predictions.empty(), (0, None))
    log.append(_rows(0, 1.0), (10, 0))
    log.append(_rows(1, MARK), (20, 1))
    log.append(pl.concat([_rows(0, 3.0, ("A",)), _withdrawn(1, "B")]), (21, 1))  # a late row: revisions
    log.append(_rows(2, 4.0), (30, 2))  # not in the prefix a restart holds: its call is resent
    log.close()
    return outputs_path(tmp_path, DAY)


def test_the_outputs_at_a_tag_are_each_rows_last_version_up_to_it(written: Path) -> None:
    got = read_outputs(written, (21, 1))
    assert got is not None
    calls = [_rows(0, 1.0), _rows(1, MARK), _rows(0, 3.0, ("A",)), _withdrawn(1, "B")]
    assert got.equals(predictions.final_outputs(pl.concat(calls)))
    assert got.filter(pl.col("ts") == START).get_column("ret_1h").to_list() == [3.0, 1.0]
    assert got.height == 3  # B's minute 1 withdrawn, minute 2 not held
    assert read_outputs(written, (10, 0)).equals(_rows(0, 1.0))  # type: ignore[union-attr]
    assert read_outputs(written, (0, None)).equals(predictions.empty())  # type: ignore[union-attr]


def test_a_restart_starts_the_file_afresh_and_goes_on(written: Path) -> None:
    held = read_outputs(written, (21, 1))
    assert held is not None
    log = OutputLog(written)
    log.open(held, (21, 1))
    log.append(_rows(2, 5.0), (30, 2))  # the resent call, published again
    log.close()
    assert read_outputs(written, (30, 2)).equals(pl.concat([held, _rows(2, 5.0)]).sort("ts", "symbol"))  # type: ignore[union-attr]
    assert read_outputs(written, (20, 1)) is None  # the old batches are gone with their tags


def test_what_it_cannot_vouch_for_is_none(written: Path, tmp_path: Path) -> None:
    assert read_outputs(written, (22, 1)) is None  # no batch with the journal's tag
    assert read_outputs(written, (21, 2)) is None
    assert read_outputs(tmp_path / "none.outputs.arrows", (21, 1)) is None
    data = written.read_bytes()
    torn = tmp_path / "torn.outputs.arrows"
    for cut in (len(data) // 2, len(data) - 200, 7):
        torn.write_bytes(data[:cut])
        assert read_outputs(torn, (30, 2)) is None, cut


def test_a_damaged_value_is_caught_by_the_crc(written: Path, tmp_path: Path) -> None:
    """A float changed in place still reads as valid Arrow: only the batch's CRC tells."""
    data = written.read_bytes()
    mark = struct.pack("<f", MARK)
    at = data.index(mark)
    damaged = tmp_path / "damaged.outputs.arrows"
    damaged.write_bytes(data[:at] + struct.pack("<f", MARK + 1) + data[at + 4 :])
    assert read_outputs(damaged, (10, 0)) is not None  # the batch before the damage is still vouched for
    assert read_outputs(damaged, (20, 1)) is None
    assert read_outputs(damaged, (21, 1)) is None  # nothing after a damaged batch is trusted
    damaged.write_bytes(data)  # the same bytes undamaged: read (the test's damage is what fails)
    assert read_outputs(damaged, (21, 1)) is not None

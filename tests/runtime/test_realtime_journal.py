"""The real-time day journal: what a restart replays, a torn tail, and kill -9 at random points."""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from realtime_feeder import sends  # the rows of each call: tests/runtime is on sys.path (no __init__.py)

from tthf.engine import predictions, runs
from tthf.engine.data import marketdata
from tthf.engine.data.calendar import session_minutes
from tthf.engine.data.marketdata import read_day
from tthf.engine.runtime.journal import DayJournal, Replay, journal_path, read_journal
from tthf.engine.runtime.outputlog import outputs_path, read_outputs
from tthf.engine.runtime.realtime import RealtimePredictor, Update, apply_update
from tthf.engine.testing import DAYS, dense_batch, make_data, make_run

DAY = DAYS[1]
FEEDER = Path(__file__).with_name("realtime_feeder.py")
HALF = 170  # the minute a restart test feeds up to (after the feeder's wrong row and its correction)
SCHEMA = marketdata.conform(marketdata.ARROW_SCHEMA.empty_table(), "journal").schema


def _rows(n: int, minute: int) -> pa.Table:
    ts = dt.datetime(2024, 1, 3, 14, 30, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=minute)
    values = dict.fromkeys(("bid", "ask", "bid_size", "ask_size", "open", "high", "low", "close", "volume"), [1.0] * n)
    frame = pl.DataFrame({"symbol": [f"S{i}" for i in range(n)], "ts": [ts] * n, **values})
    return marketdata.conform(frame.to_arrow(), "test")


def _us(minute: int) -> int:
    return int((dt.datetime(2024, 1, 3, 14, 30, tzinfo=dt.timezone.utc).timestamp() + 60 * minute) * 1e6)


def test_a_restart_replays_up_to_the_call_that_closed_the_last_minute(tmp_path: Path) -> None:
    path = journal_path(tmp_path, DAY)
    journal = DayJournal(path, SCHEMA)
    journal.open(Replay(SCHEMA.empty_table(), None))
    journal.append(_rows(2, 0), None)  # rows before any close
    journal.append(_rows(3, 1), _us(1))
    journal.append(_rows(4, 2), _us(2))  # closes 2: not replayed, nor what came after it
    journal.append(_rows(5, 3), _us(2))
    held = read_journal(path, SCHEMA)
    assert held.close_us == _us(1) and held.rows.num_rows == 2 + 3
    # a torn tail (the process died writing a batch) is dropped; the batches before it stay
    size = path.stat().st_size
    journal.append(_rows(6, 3), _us(3))
    with open(path, "r+b") as f:
        f.truncate(size + (path.stat().st_size - size) // 2)
    assert read_journal(path, SCHEMA) == held
    # reopened, the journal holds what was replayed, and goes on
    again = DayJournal(path, SCHEMA)
    again.open(held)
    again.append(_rows(1, 2), _us(2))
    assert read_journal(path, SCHEMA) == held  # the call that closed 2 is the last one again
    again.append(_rows(1, 3), _us(3))
    assert read_journal(path, SCHEMA).close_us == _us(2)
    # a second restart before any call: the prefix the first held is held again, not resent
    third = DayJournal(path, SCHEMA)
    third.open(held)
    third.close()
    assert read_journal(path, SCHEMA) == held
    assert read_journal(tmp_path / "none.arrows", SCHEMA) == Replay(SCHEMA.empty_table(), None)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pl.DataFrame]:
    base = tmp_path_factory.mktemp("journal")
    data = make_data(base / "data", n_symbols=4)
    make_run(str(base / "runs"), data)
    run = runs.Run.open(runs.find_run(str(base / "runs"), "jen"))
    return base / "runs", data, dense_batch(run, read_day(str(data), DAY), DAY)


def _feeder(store: Path, data: Path, journal: Path, out: Path, run: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, str(FEEDER), str(store), str(data), str(journal), str(out), DAY.isoformat(), str(run)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_at_random_points_restart_and_resend_equals_batch(
    day: tuple[Path, Path, pl.DataFrame], tmp_path: Path
) -> None:
    """A process feeding a day is killed (SIGKILL) 3 times at random points, restarted, and resends."""
    store, data, batch = day
    journal, out = tmp_path / "journal", tmp_path / "out"
    out.mkdir()
    rng = random.Random(23)
    starts = []
    for run in range(3):
        proc = _feeder(store, data, journal, out, run)
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()  # "ready FIRST": replayed, about to send
        assert ready[:1] == ["ready"], proc.communicate()[1][-2000:]
        starts.append(int(ready[1]))
        time.sleep(rng.uniform(0.2, 4.0))
        proc.kill()
        proc.wait()
    proc = _feeder(store, data, journal, out, 3)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert starts[0] == 0 and starts == sorted(starts) and starts[-1] > 0  # each resumed where the journal was
    published = predictions.empty()
    for path in sorted(out.glob("*.parquet")):  # in the order the calls returned
        frame = pl.read_parquet(path)
        update = Update(
            frame.filter(~pl.col("revision")).drop("revision"), frame.filter(pl.col("revision")).drop("revision"), None
        )
        published = apply_update(published, update)
    assert published.equals(batch), starts


@pytest.fixture(scope="module")
def fed(day: tuple[Path, Path, pl.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """A journal (and its outputs file) of a day fed up to ``HALF``, a wrong row and its correction included."""
    store, data, _ = day
    journal = tmp_path_factory.mktemp("fed")
    rt = RealtimePredictor.from_run(str(store), "jen", backend="torch", journal=journal)
    rt.reset(DAY)
    minutes = _minutes()
    for t, rows in enumerate(sends(read_day(str(data), DAY), minutes)[: HALF + 1]):
        rt.update(rows, close=minutes[t])
    # the call that closed HALF is resent: the journal holds HALF - 1; a symbol that reads otherwise reversed
    symbol = next(s for s in rt.grid.symbols if s != s[::-1])  # type: ignore[union-attr]
    return journal, HALF - 1, symbol


def _minutes() -> list[dt.datetime]:
    return [m.astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc) for m in session_minutes(DAY)]


def _restart(
    store: Path, fed: tuple[Path, int, str], folder: Path, caplog: pytest.LogCaptureFixture, damage: str | None = None
) -> tuple[RealtimePredictor, pl.DataFrame, bool]:
    """A restart on a copy of the fed journal, its outputs file damaged (``DAMAGES``): the predictor,
    its ``replayed()``, and whether it predicted the held minutes again."""
    journal = folder / "journal"
    shutil.copytree(fed[0], journal)
    outputs = outputs_path(journal, DAY)
    data = outputs.read_bytes()
    if damage == "missing":
        outputs.unlink()
    elif damage == "truncated":
        outputs.write_bytes(data[: len(data) // 2])
    elif damage == "corrupted":  # a symbol's name changed in the first batch with rows: still valid Arrow
        at = data.index(fed[2].encode())
        outputs.write_bytes(data[:at] + fed[2][::-1].encode() + data[at + len(fed[2]) :])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tthf.realtime"):
        rt = RealtimePredictor.from_run(str(store), "jen", backend="torch", journal=journal)
        held = rt.reset(DAY)
    assert held == _minutes()[fed[1]]
    return rt, rt.replayed(), "predicting its minutes again" in caplog.text


@pytest.mark.slow  # the day fed up to HALF (fixture ``fed``, shared with the tests below)
def test_restored_outputs_equal_the_recomputed_ones(
    day: tuple[Path, Path, pl.DataFrame], fed: tuple[Path, int, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, _, batch = day
    _, restored, again = _restart(store, fed, tmp_path / "intact", caplog)
    assert not again  # restored from the outputs file: no minute predicted again
    _, recomputed, again = _restart(store, fed, tmp_path / "missing", caplog, "missing")
    assert again and recomputed.equals(restored)
    assert restored.equals(batch.filter(pl.col("ts") <= _minutes()[fed[1]]))


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_outputs_file_falls_back_to_the_full_replay(
    day: tuple[Path, Path, pl.DataFrame],
    fed: tuple[Path, int, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    store, _, batch = day
    _, replayed, again = _restart(store, fed, tmp_path, caplog, damage)
    assert again and replayed.equals(batch.filter(pl.col("ts") <= _minutes()[fed[1]]))


@pytest.mark.slow
def test_after_a_fall_back_the_day_ends_equal_to_batch_and_the_file_vouches_again(
    day: tuple[Path, Path, pl.DataFrame], fed: tuple[Path, int, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, data, batch = day
    rt, published, _ = _restart(store, fed, tmp_path, caplog, "missing")
    minutes = _minutes()
    for t, rows in enumerate(sends(read_day(str(data), DAY), minutes)[fed[1] + 1 :], fed[1] + 1):
        published = apply_update(published, rt.update(rows, close=minutes[t]))
    assert published.equals(batch)
    assert read_outputs(outputs_path(tmp_path / "journal", DAY), rt._journal.written).equals(batch)  # type: ignore[union-attr]

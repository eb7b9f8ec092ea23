"""``--dates latest|new`` in tthf-run: a store with gaps, a half day, a failed date, a date done with other settings."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from tthf.engine.data.marketdata import partition, write_day
from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.runs import INFERENCE_MANIFEST, open_run
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions
from tthf.engine.runtime.recorder import InferenceSummary
from tthf.engine.testing import make_random_run

D = dt.date
#: Monday, Tuesday, the half day before Independence Day, the Friday after it
JULY = [D(2024, 7, 1), D(2024, 7, 2), D(2024, 7, 3), D(2024, 7, 5)]
SYNTH = SynthConfig(n_symbols=3, start=JULY[0], end=JULY[-1], seed=3)


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)  # naive: New York time


def _statuses(summary: InferenceSummary) -> dict[str, str]:
    return {r.date: r.status for r in summary.results}


@pytest.fixture()
def market(tmp_path: Path) -> tuple[Path, str]:
    data = tmp_path / "data"
    for day in JULY:
        write_day(str(data), day, generate_day(SYNTH, day))
    make_random_run(str(tmp_path / "runs"), data, JULY[:3], "july", d_model=16, n_heads=2, n_layers=1, d_ff=32)
    return data, str(tmp_path / "runs")


def test_new_and_latest(market: tuple[Path, str], caplog: pytest.LogCaptureFixture) -> None:
    data, store = market
    run = open_run(store, "july")
    gap = data / partition(JULY[1])
    shutil.move(gap, data.parent / "held_back")  # the 2nd arrives late
    shutil.copytree(data / partition(JULY[3]), data / "date=2024-07-06")  # a Saturday partition is no trading date
    broken = data / partition(JULY[2]) / "part-0.parquet"
    good = pl.read_parquet(broken)
    good.drop("ask").write_parquet(broken)

    def new(as_of: str, **kw: object) -> dict[str, str]:
        return _statuses(run_inference(run, RunOptions(dates="new", backend="torch", as_of=_at(as_of), **kw)))

    # the 1st done with other settings (parquet): csv does it again
    assert _statuses(run_inference(run, RunOptions(dates=str(JULY[0]), backend="torch", fmt="parquet"))) == {
        "2024-07-01": "ok"
    }
    # Friday the 5th is still open at noon: not predicted; the half day fails and is recorded
    caplog.set_level("INFO", "tthf.run")
    assert new("2024-07-05T12:00") == {"2024-07-01": "ok", "2024-07-03": "failed"}
    assert "--dates new: 2024-07-01, 2024-07-03" in caplog.text
    assert "stale" not in caplog.text  # the 2nd is a gap before the newest date, not freshness
    # the gap filled late, the half day repaired, Friday closed: exactly those three
    shutil.move(data.parent / "held_back", gap)
    good.write_parquet(broken)
    assert new("2024-07-05T16:00") == {"2024-07-02": "ok", "2024-07-03": "ok", "2024-07-05": "ok"}
    caplog.clear()
    assert new("2024-07-09T09:00") == {}  # nothing new; Monday the 8th has no data: stale, warned
    assert "nothing new" in caplog.text and "stale: " in caplog.text and "without data: 2024-07-08" in caplog.text
    caplog.clear()
    assert new("2024-07-09T09:00", max_missing=1) == {}
    assert "within --max-missing 1" not in caplog.text and "stale" not in caplog.text  # tolerated: no warning
    entries = json.loads(run.read_text(INFERENCE_MANIFEST))["dates"]
    assert sorted(entries) == [str(d) for d in JULY] and {e["status"] for e in entries.values()} == {"ok"}
    assert new("2024-07-09T09:00", sample_every=7) == dict.fromkeys(map(str, JULY), "ok")  # other settings: all
    latest = run_inference(run, RunOptions(dates="latest", backend="torch", sample_every=7))
    assert _statuses(latest) == {"2024-07-05": "skipped"}

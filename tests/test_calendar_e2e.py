"""Nothing assumes New York's 390-minute session: a London (XLON) market from training to predictions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from tthf.engine import runs
from tthf.engine.data.calendar import session_bounds, session_minutes, trading_days
from tthf.engine.data.synth import SynthConfig, generate_market
from tthf.engine.runs import open_run
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions
from tthf.engine.training.train import train_run

pytestmark = pytest.mark.slow
START, END = dt.date(2024, 3, 4), dt.date(2024, 3, 15)


@pytest.fixture(scope="module")
def london(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, runs.Run]:
    base = tmp_path_factory.mktemp("xlon")
    generate_market(SynthConfig(n_symbols=4, start=START, end=END, seed=5, calendar="XLON"), str(base / "data"))
    result = train_run(
        str(base / "data"),
        str(base / "runs"),
        "london",
        calendar="XLON",
        overrides={
            "epochs": 1,
            "max_train_windows": 2000,
            "threads": 1,
            "d_model": 16,
            "n_heads": 2,
            "n_layers": 1,
            "d_ff": 32,
        },
    )
    return base, result.run


def test_the_run_records_its_calendar_and_predicts_london_minutes(london: tuple[Path, runs.Run]) -> None:
    base, run = london
    assert run.config.calendar == "XLON"
    assert runs.open_run(str(base / "runs"), "london").config.calendar == "XLON"
    day = dt.date.fromisoformat(run.config.splits.test[-1])
    summary = run_inference(
        open_run(str(base / "runs"), "london"), RunOptions(dates=day.isoformat(), dense=True, backend="torch")
    )
    assert summary.exit_code == 0 and summary.by_status("ok")
    frame = pl.read_csv(base / "runs" / "demo" / "three_headed_transformer" / "london" / "inference" / f"{day}.csv")
    minutes = session_minutes(day, "XLON")
    assert len(minutes) == 510 != len(session_minutes(day))  # 08:00-16:30 London, not 390
    open_utc, close_utc = session_bounds(day, "XLON")
    ts = frame.get_column("ts").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
    assert ts.min() >= open_utc + dt.timedelta(minutes=29) and ts.max() < close_utc
    assert ts.n_unique() > 390  # minutes New York's session does not have


def test_london_trading_days_are_the_exchange_s() -> None:
    days = trading_days(START, END, "XLON")
    assert len(days) == 10 and all(d.weekday() < 5 for d in days)
    assert trading_days(dt.date(2024, 3, 29), dt.date(2024, 4, 1), "XLON") == []  # Good Friday and Easter Monday

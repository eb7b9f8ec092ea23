"""``tthf-daily`` over a few synthetic days: a failed date, a second call, new data, stale data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from tthf.cli.daily import main
from tthf.engine.data.marketdata import partition, write_day
from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.evaluation.history import read_history
from tthf.engine.runs import HISTORY, INFERENCE_MANIFEST, open_run
from tthf.engine.testing import DAYS, make_data, make_run

pytestmark = pytest.mark.slow

FRIDAY = dt.date(2024, 1, 5)


def test_daily(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_data(tmp_path / "data")
    store = str(tmp_path / "runs")
    make_run(store, data)
    run = open_run(store, "jennifer")
    broken = data / partition(DAYS[1]) / "part-0.parquet"
    good = pl.read_parquet(broken)
    good.drop("ask").write_parquet(broken)

    def daily(as_of: str) -> tuple[int, str]:
        code = main(["--store", store, "--run", "jennifer", "--backend", "torch", "--as-of", as_of])
        return code, capsys.readouterr().out

    # the failed date is recorded, the others are predicted and scored
    code, out = daily("2024-01-04T17:00")
    assert code == 1, out
    assert f"predicted: {DAYS[0]}, {DAYS[2]}; 1 failed" in out and f"FAILED {DAYS[1]}:" in out
    assert f"recorded {DAYS[0]} scored, {DAYS[1]} failed, {DAYS[2]} scored" in out
    # repaired: the next call does that date only
    good.write_parquet(broken)
    code, out = daily("2024-01-04T18:00")
    assert code == 0, out
    assert f"predicted: {DAYS[1]}\n" in out and f"recorded {DAYS[1]} scored;" in out
    # the same day again: nothing new, nothing written
    files = {key: run.read_bytes(key) for key in (HISTORY, INFERENCE_MANIFEST)}
    code, out = daily("2024-01-04T19:00")
    assert code == 0 and "predicted: nothing new" in out and "nothing new to score" in out, out
    assert {key: run.read_bytes(key) for key in files} == files
    # Friday's data arrives after its close: that date only
    write_day(str(data), FRIDAY, generate_day(SynthConfig(n_symbols=3, start=DAYS[0], end=FRIDAY, seed=3), FRIDAY))
    code, out = daily("2024-01-05T16:30")
    assert code == 0 and f"predicted: {FRIDAY}\n" in out and f"recorded {FRIDAY} scored;" in out, out
    # Monday and Tuesday closed without data: stale, exit 8, nothing else to do
    code, out = daily("2024-01-09T17:00")
    assert code == 8 and out.startswith("stale: ") and "without data: 2024-01-08, 2024-01-09" in out, out
    assert "tthf-daily: STALE data (exit 8)" in out
    history = read_history(run)
    assert history["date"].to_list() == [*DAYS, FRIDAY] and set(history["status"]) == {"scored"}
    assert history.select("date", "evaluation").is_unique().all()


@pytest.mark.s3
def test_daily_with_s3_store_and_data(tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture) -> None:
    from tthf.engine.store import open_store

    local = make_data(tmp_path / "data")
    market = open_store(f"{s3_bucket}/market")
    for path in local.rglob("*.parquet"):
        market.write_bytes(str(path.relative_to(local)), path.read_bytes())
    make_run(s3_bucket, local)
    argv = ["--store", s3_bucket, "--run", "jennifer", "--data", market.uri(), "--backend", "torch"]
    assert main([*argv, "--as-of", "2024-01-04T17:00"]) == 0
    out = capsys.readouterr().out
    assert f"predicted: {', '.join(map(str, DAYS))}\n" in out and "history: s3://" in out
    assert main([*argv, "--as-of", "2024-01-08T17:00"]) == 8  # Friday and Monday never arrived
    out = capsys.readouterr().out
    assert "predicted: nothing new" in out and "without data: 2024-01-05, 2024-01-08" in out
    run = open_run(s3_bucket, "jennifer")
    assert read_history(run)["date"].to_list() == DAYS

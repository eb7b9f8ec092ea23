"""tthf-check: what tthf-run would make of each date, from the same reading and cleaning code."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tthf.cli.check import format_report, main
from tthf.engine.data.calendar import session_bounds
from tthf.engine.data.marketdata import read_day, write_day
from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.features import COUNT_KEYS, build_day
from tthf.engine.features.check import check_data, check_day
from tthf.engine.runs import open_run
from tthf.engine.testing import DAYS, NO_QUOTE_SYMBOL, with_null_quotes
from tthf.engine.windows import count_windows
from tthf.errors import DataError, NoDataError, UsageError

SYNTH = SynthConfig(n_symbols=4, start=DAYS[0], end=DAYS[-1], seed=3)


def _root(path: Path) -> Path:
    """DAYS[0] clean, DAYS[1] with a feed's null quotes and a quote-less symbol, DAYS[2] with
    a symbol that has extended-hours rows only and one with a few regular minutes."""
    write_day(str(path), DAYS[0], generate_day(SYNTH, DAYS[0]))
    write_day(str(path), DAYS[1], with_null_quotes(generate_day(SYNTH, DAYS[1])))
    raw = generate_day(SYNTH, DAYS[2])
    first = raw.filter(pl.col("symbol") == raw.get_column("symbol").min())
    start = session_bounds(DAYS[2])[0]
    early = first.filter(pl.col("ts") < start).with_columns(pl.lit("PRE").alias("symbol"))
    short = first.filter(pl.col("ts").is_between(start, start + dt.timedelta(minutes=19))).with_columns(
        pl.lit("SHORT").alias("symbol")
    )
    write_day(str(path), DAYS[2], pl.concat([raw, early, short]))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _root(tmp_path_factory.mktemp("check") / "data")


def test_each_date_is_what_the_reading_and_cleaning_code_says(root: Path) -> None:
    report = check_data(str(root), "2024-01")
    ok = {d.date: d for d in report.dates if d.status == "ok"}
    assert list(ok) == [d.isoformat() for d in DAYS] and report.exit_code == 0
    assert {d.status for d in report.dates if d.date not in ok} == {"no_data"}  # the other January trading days
    for day in DAYS:
        got, counts = ok[day.isoformat()], {}
        raw = read_day(str(root), day, counts=counts)
        feats = build_day(raw, day)
        assert got.counts == {**counts, **feats.counts} and list(got.counts)[2:] == list(COUNT_KEYS)
        assert got.rows == raw.height and got.symbols == len(feats.symbols) and got.minutes == 390
        assert got.coverage == pytest.approx(feats.mask.mean(), abs=1e-6) and 0.7 < got.coverage <= 1
        assert got.windows == count_windows(feats.mask) > 0


def test_null_quotes_are_counted_and_the_quote_less_symbol_is_left_out_with_the_reason(root: Path) -> None:
    got = check_day(str(root), DAYS[1])
    session = read_day(str(root), DAYS[1]).filter(pl.col("ts").is_between(*session_bounds(DAYS[1]), closed="left"))
    n_rows = session.filter(pl.col("symbol") == NO_QUOTE_SYMBOL).height
    assert got.status == "ok" and got.counts["symbols_no_quote"] == 1
    assert got.counts["quote_null"] == session.get_column("bid").null_count() > n_rows
    assert got.left_out == {NO_QUOTE_SYMBOL: f"no usable quote all day (quote_null {n_rows})"}
    assert got.symbols == 5 and got.coverage <= 4 / 5  # on the grid, all masked: none of its cells is covered


def test_symbols_without_a_session_row_or_a_full_window_are_left_out_with_the_reason(root: Path) -> None:
    got = check_day(str(root), DAYS[2])
    raw = read_day(str(root), DAYS[2])
    feats = build_day(raw, DAYS[2])
    n_pre, usable = raw.filter(pl.col("symbol") == "PRE").height, feats.mask[feats.symbols.index("SHORT")].sum()
    assert 20 <= usable < 30  # 20 minutes of quotes, then the last one stays usable for MAX_QUOTE_AGE minutes
    assert got.left_out == {
        "PRE": f"no row in the regular session (extended_hours {n_pre})",
        "SHORT": f"usable quote on {usable} of 390 minutes, never 30 in a row: no full window",
    }
    assert got.symbols == 5 and got.counts["symbols_no_quote"] == 0
    assert check_day(str(root), DAYS[2], seq_len=20).left_out == {"PRE": got.left_out["PRE"]}


@pytest.mark.slow
def test_windows_are_the_rows_tthf_run_writes(root: Path, tmp_path: Path) -> None:
    from tthf.engine.runtime.batch import run_inference
    from tthf.engine.runtime.options import RunOptions
    from tthf.engine.testing import make_run

    make_run(str(tmp_path / "runs"), root)
    summary = run_inference(
        open_run(str(tmp_path / "runs"), "jen"), RunOptions(dates="2024-01-02:2024-01-04", dense=True, backend="torch")
    )
    report = check_data(str(root), "2024-01-02:2024-01-04")
    assert [(r.date, r.rows, r.counts) for r in summary.results] == [
        (d.date, d.windows, d.counts) for d in report.dates
    ]


def _broken(tmp_path: Path, root: Path) -> Path:
    data = tmp_path / "broken"
    shutil.copytree(root, data)
    (data / "date=2024-01-03" / "part-0.parquet").write_bytes(b"PAR1 not parquet")
    raw = pl.read_parquet(data / "date=2024-01-04" / "part-0.parquet")
    raw.drop("ask").write_parquet(data / "date=2024-01-04" / "part-0.parquet")
    return data


def test_unreadable_dates_are_reported_with_the_reason_and_the_others_are_checked(root: Path, tmp_path: Path) -> None:
    report = check_data(str(_broken(tmp_path, root)), "2024-01-02:2024-01-04")
    status = {d.date: (d.status, d.reason) for d in report.dates}
    assert status["2024-01-02"] == ("ok", "")
    assert (
        status["2024-01-03"][0] == "failed" and "part-0.parquet: not a readable Parquet file" in status["2024-01-03"][1]
    )
    assert status["2024-01-04"][0] == "failed" and "required column 'ask'" in status["2024-01-04"][1]
    assert report.exit_code == DataError.exit_code


def test_a_date_without_session_rows_fails_as_in_tthf_run(tmp_path: Path) -> None:
    day = DAYS[0]
    raw = generate_day(SYNTH, day)
    early = raw.filter(pl.col("ts") < session_bounds(day)[0])
    write_day(str(tmp_path), day, early)
    got = check_day(str(tmp_path), day)
    first, last = early.get_column("ts").min(), early.get_column("ts").max()
    assert got.status == "failed" and got.reason.startswith(
        f"{tmp_path}/date=2024-01-02: all {early.height} rows are outside the regular session of 2024-01-02, "
        f"09:30-16:00 America/New_York (14:30-21:00 UTC): first ts {first.isoformat()} "
    )
    assert f"last ts {last.isoformat()}" in got.reason and "Are the timestamps UTC instants?" in got.reason
    assert got.exit_code == DataError.exit_code


def test_sub_minute_stamps_are_floored_and_counted(root: Path, tmp_path: Path) -> None:
    raw = read_day(str(root), DAYS[0])
    write_day(str(tmp_path), DAYS[0], raw.with_columns(pl.col("ts") + dt.timedelta(seconds=59, milliseconds=999)))
    got, ref = check_day(str(tmp_path), DAYS[0]), check_day(str(root), DAYS[0])
    assert got.status == "ok" and got.counts["ts_floored"] == raw.height and ref.counts["ts_floored"] == 0
    assert (got.windows, got.coverage, got.left_out) == (ref.windows, ref.coverage, ref.left_out)
    assert "  ts_floored " in format_report(check_data(str(tmp_path), "2024-01-02"))


def test_bars_stamped_with_their_end_are_a_warning(tmp_path: Path) -> None:
    day = DAYS[0]
    raw = generate_day(SynthConfig(n_symbols=4, start=day, end=day, seed=3, extended_hours=False), day)
    write_day(str(tmp_path), day, raw.with_columns(pl.col("ts") + dt.timedelta(minutes=1)))
    got = check_day(str(tmp_path), day)
    assert got.status == "ok" and len(got.warnings) == 1
    assert got.warnings[0].startswith(f"{tmp_path}/date=2024-01-02: the bars of 2024-01-02 look stamped with their")
    assert "tthf-ingest csv --bar-label end" in got.warnings[0]
    assert f"WARNING 2024-01-02: {got.warnings[0]}" in format_report(check_data(str(tmp_path), "2024-01-02"))


def test_columns_that_differ_in_case_are_named_with_the_renames(root: Path, tmp_path: Path) -> None:
    (tmp_path / "date=2024-01-02").mkdir()
    raw = pl.read_parquet(root / "date=2024-01-02" / "part-0.parquet")
    raw.rename({"symbol": "Symbol", "ts": "TS", "bid": "Bid"}).write_parquet(tmp_path / "date=2024-01-02" / "v.parquet")
    got = check_day(str(tmp_path), DAYS[0])
    assert got.status == "failed" and got.reason.startswith(f"{tmp_path}/date=2024-01-02/v.parquet: required columns")
    assert "the file has ['Symbol', 'TS', 'Bid', 'ask'," in got.reason
    assert "rename Symbol->symbol, TS->ts, Bid->bid." in got.reason


def test_cli_table_json_and_exit_codes(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(root), "--dates", "2024-01-02:2024-01-05"]) == 0
    out = capsys.readouterr().out
    assert "2024-01-03  ok" in out and "quote_null" in out and "symbols_no_quote" in out
    assert f"2024-01-03  {NO_QUOTE_SYMBOL:<8} no usable quote all day (quote_null" in out
    assert "2024-01-04  SHORT" in out and "no full window" in out
    assert "dates: 3 ok, 0 unreadable, 1 without data" in out
    assert main([str(root), "--dates", "2024-01-03", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (entry,) = report["dates"]
    assert entry["left_out"] == check_day(str(root), DAYS[1]).left_out and report["exit_code"] == 0
    assert report["totals"]["quote_null"] == entry["counts"]["quote_null"] > 0
    assert main([str(_broken(tmp_path, root)), "--dates", "2024-01-02:2024-01-04"]) == 3
    out = capsys.readouterr().out
    assert "dates: 1 ok, 2 unreadable" in out and "UNREADABLE 2024-01-03: " in out
    assert main([str(root), "--dates", "2024-13"]) == UsageError.exit_code
    assert "tthf-check: error: --dates '2024-13'" in capsys.readouterr().err
    assert main([str(root), "--dates", "2023"]) == NoDataError.exit_code


@pytest.mark.s3
def test_on_s3(root: Path, s3_bucket: str) -> None:
    for day in DAYS:
        write_day(s3_bucket, day, read_day(str(root), day))
    local, remote = check_data(str(root), "2024-01-02:2024-01-04"), check_data(s3_bucket, "2024-01-02:2024-01-04")
    strip = ("seconds",)
    assert [{k: v for k, v in vars(d).items() if k not in strip} for d in remote.dates] == [
        {k: v for k, v in vars(d).items() if k not in strip} for d in local.dates
    ]
    assert remote.data_root == s3_bucket


@pytest.mark.slow
def test_console_script_runs_in_a_fresh_process(root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tthf.cli.check", str(root), "--dates", "2024-01-02", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dates"][0]["windows"] > 0


def test_only_the_schema_columns_are_read(root: Path, tmp_path: Path) -> None:
    """A vendor's extra columns cost nothing and change nothing."""
    raw = pl.read_parquet(root / "date=2024-01-02" / "part-0.parquet")
    (tmp_path / "wide" / "date=2024-01-02").mkdir(parents=True)
    wide = raw.with_columns(*[pl.lit(np.float64(i)).alias(f"extra_{i}") for i in range(20)])
    wide.write_parquet(tmp_path / "wide" / "date=2024-01-02" / "part-0.parquet")
    a, b = check_day(str(root), DAYS[0]), check_day(str(tmp_path / "wide"), DAYS[0])
    assert (a.counts, a.left_out, a.windows) == (b.counts, b.left_out, b.windows)


def test_freshness_says_stale_names_the_sessions_and_exits_8(root: Path, capsys: pytest.CaptureFixture) -> None:
    last = max(DAYS)  # a Thursday
    assert main([str(root), "--freshness", "--as-of", f"{last}T16:30"]) == 0
    assert capsys.readouterr().out.startswith(f"fresh: {root}: newest date with data {last}")
    assert main([str(root), "--freshness", "--as-of", "2024-01-08T16:00"]) == 8  # Friday and Monday closed
    out = capsys.readouterr().out
    assert out.startswith("stale: ") and out.rstrip().endswith("without data: 2024-01-05, 2024-01-08")


def test_freshness_with_dates_and_json(root: Path, capsys: pytest.CaptureFixture) -> None:
    late = ["--freshness", "--max-missing", "2", "--as-of", "2024-01-08T16:00"]
    assert main([str(root), *late, "--dates", "latest", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["freshness"]["missing"] == ["2024-01-05", "2024-01-08"] and not out["freshness"]["stale"]
    assert [d["date"] for d in out["dates"]] == [str(max(DAYS))]
    assert main([str(root)]) == 2
    assert "needs --dates" in capsys.readouterr().err

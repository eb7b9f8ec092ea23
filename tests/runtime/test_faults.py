"""tthf-run under the faults real feeds and real machines have.

Messy rows are cleaned or masked, counted in the manifest and never fail their date;
dates that cannot be read are recorded with a one-line reason while the others finish;
a run killed with SIGKILL or Ctrl-C is completed by the rerun with byte-identical files;
an S3 server that drops out for a moment is survived.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from tthf.cli.run import main
from tthf.engine.data.marketdata import read_day, write_day
from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.testing import DAYS, make_run

INFERENCE = Path("demo/three_headed_transformer/jennifer/inference")
# one defect per date (DAYS[0] stays clean: the tiny run's scalers are fitted on it)
MESSY = {
    dt.date(2024, 1, 3): "nonfinite",
    dt.date(2024, 1, 4): "crossed",
    dt.date(2024, 1, 5): "zero",
    dt.date(2024, 1, 8): "stale",
    dt.date(2024, 1, 9): "unsorted",
    dt.date(2024, 1, 10): "short_symbol",
    dt.date(2024, 1, 11): "null_quotes",
    dt.date(2024, 7, 3): "half_day",
}
SYNTH = SynthConfig(n_symbols=4, start=DAYS[0], end=dt.date(2024, 7, 3), seed=3)


def _rows(raw: pl.DataFrame, every: int) -> pl.Expr:
    """Every ``every``-th regular-session-ish row (by position), for planting defects."""
    return pl.int_range(pl.len()) % every == 7


def _mess(raw: pl.DataFrame, kind: str) -> pl.DataFrame:
    if kind == "nonfinite":
        return raw.with_columns(
            pl.when(_rows(raw, 40)).then(float("nan")).otherwise(pl.col("bid")).alias("bid"),
            pl.when(_rows(raw, 53)).then(float("inf")).otherwise(pl.col("ask")).alias("ask"),
            pl.when(_rows(raw, 61)).then(float("-inf")).otherwise(pl.col("vwap")).alias("vwap"),
        )
    if kind == "crossed":
        return raw.with_columns(
            pl.when(_rows(raw, 30)).then(pl.col("ask") + 0.05).otherwise(pl.col("bid")).alias("bid")
        )
    if kind == "zero":
        return raw.with_columns(pl.when(_rows(raw, 30)).then(0.0).otherwise(pl.col("bid")).alias("bid"))
    if kind == "stale":  # a symbol stops quoting for 12 minutes mid-day: its quote goes stale, masked after 5
        first = raw.get_column("symbol").min()
        gap = (pl.col("symbol") == first) & pl.col("ts").dt.hour().eq(17) & pl.col("ts").dt.minute().is_between(0, 11)
        return raw.filter(~gap)
    if kind == "unsorted":
        return raw.sample(fraction=1.0, shuffle=True, seed=5)
    if kind == "short_symbol":  # one symbol has 20 regular minutes only: no full window, no rows
        first = raw.get_column("symbol").min()
        short = (pl.col("symbol") == first) & ~pl.col("ts").dt.hour().eq(15).and_(pl.col("ts").dt.minute() < 20)
        return raw.filter(~short)
    if kind == "null_quotes":
        return raw.with_columns(pl.when(_rows(raw, 25)).then(None).otherwise(pl.col("ask_size")).alias("ask_size"))
    return raw  # half_day: the day itself is the case


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("messy")
    clean, dirty = base / "clean", base / "data"
    for day in [DAYS[0], *MESSY]:
        raw = generate_day(SYNTH, day)
        write_day(str(clean), day, raw)
        # written as another tool would, bypassing write_day's validation
        target = dirty / f"date={day.isoformat()}" / "part-0.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        _mess(raw, MESSY.get(day, "")).write_parquet(target)
    make_run(str(base / "runs"), clean)
    return base


def _cli(base: Path, *args: str) -> int:
    return main(["--run", "jen", "--store", str(base / "runs"), "--dense", *args])


def test_messy_data_is_cleaned_counted_and_never_fails_its_date(messy: Path, capsys: pytest.CaptureFixture) -> None:
    # null quotes are "no quote update": cleaned and counted like the other defects
    assert _cli(messy, "--data", str(messy / "data"), "--dates", "2024-01-02:2024-07-03") == 0
    out = capsys.readouterr().out
    assert "9 ok, 0 failed" in out and "FAILED" not in out
    manifest = json.loads((messy / "runs" / INFERENCE / "manifest.json").read_text())["dates"]
    counts = {d: v["counts"] for d, v in manifest.items() if v["status"] == "ok"}
    assert counts["2024-01-03"]["quote_nonfinite"] > 0 and counts["2024-01-03"]["trade_invalid"] > 0
    assert counts["2024-01-04"]["quote_crossed"] > 0
    assert counts["2024-01-05"]["quote_nonpositive"] > 0
    assert counts["2024-01-11"]["quote_null"] > 0
    assert counts["2024-01-08"]["masked_out"] > counts["2024-01-02"]["masked_out"]
    assert all(c["extended_hours"] > 0 for c in counts.values())
    out_dir = messy / "runs" / INFERENCE

    def read(day: str) -> pl.DataFrame:
        return pl.read_csv(out_dir / f"{day}.csv")

    # unsorted input: the same file as sorted input
    assert _cli(messy, "--data", str(messy / "clean"), "--dates", "2024-01-09", "--overwrite") == 0
    sorted_bytes = (out_dir / "2024-01-09.csv").read_bytes()
    assert _cli(messy, "--data", str(messy / "data"), "--dates", "2024-01-09", "--overwrite") == 0
    assert (out_dir / "2024-01-09.csv").read_bytes() == sorted_bytes
    short = read("2024-01-10")
    assert short["symbol"].n_unique() == 3 and short.height > 0
    half = read("2024-07-03")
    assert half["ts"].max() == "2024-07-03T16:59:00Z"  # 13:00 New York close
    stale_sym = read("2024-01-02")["symbol"].min()
    stale = read("2024-01-08").filter(pl.col("symbol") == stale_sym)["ts"].to_list()
    assert "2024-01-08T17:10:00Z" not in stale  # a window over the stale quotes is not valid


def test_unreadable_dates_are_recorded_and_the_others_finish(
    tmp_path: Path, messy: Path, capsys: pytest.CaptureFixture
) -> None:
    base = tmp_path
    shutil.copytree(messy / "runs", base / "runs", ignore=shutil.ignore_patterns("inference"))
    data = base / "data"
    shutil.copytree(messy / "clean", data)
    part = "part-0.parquet"
    (data / "date=2024-01-03" / part).write_bytes(b"PAR1 this is not parquet")  # corrupt
    raw = pl.read_parquet(data / "date=2024-01-04" / part)
    raw.drop("ask").write_parquet(data / "date=2024-01-04" / part)  # missing column
    raw.with_columns(pl.col("bid").cast(pl.String)).write_parquet(data / "date=2024-01-05" / part)  # mistyped
    raw8 = pl.read_parquet(data / "date=2024-01-08" / part)
    pl.concat([raw8, raw8.head(3).with_columns(pl.col("bid") + 0.01)]).write_parquet(data / "date=2024-01-08" / part)
    shutil.rmtree(data / "date=2024-01-09")  # missing partition
    assert _cli(base, "--data", str(data), "--dates", "2024-01-02:2024-01-10") == 1
    out = capsys.readouterr()
    assert "2 ok, 4 failed" in out.out and "1 without data" in out.out
    manifest = json.loads((base / "runs" / INFERENCE / "manifest.json").read_text())["dates"]
    reasons = {d: v["reason"] for d, v in manifest.items() if v["status"] == "failed"}
    assert "not a readable Parquet file" in reasons["2024-01-03"]
    assert "'ask'" in reasons["2024-01-04"] and "missing" in reasons["2024-01-04"]
    assert "'bid'" in reasons["2024-01-05"] and "string" in reasons["2024-01-05"]
    assert "different values" in reasons["2024-01-08"]
    assert all(part in r and "\n" not in r for r in reasons.values())
    assert manifest["2024-01-09"]["status"] == "no_data"
    assert manifest["2024-01-02"]["status"] == manifest["2024-01-10"]["status"] == "ok"
    assert sorted(p.name for p in (base / "runs" / INFERENCE).glob("*.csv")) == ["2024-01-02.csv", "2024-01-10.csv"]


def _subprocess(base: Path, dates: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [
        sys.executable,
        "-m",
        "tthf.cli.run",
        "--run",
        "jen",
        "--store",
        str(base / "runs"),
        "--dense",
        "--data",
        str(base / "data"),
        "--dates",
        dates,
        "--batch-size",
        "64",
        *extra,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _ok_dates(base: Path) -> int:
    try:
        manifest = json.loads((base / "runs" / INFERENCE / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(v["status"] == "ok" for v in manifest["dates"].values())


@pytest.fixture(scope="module")
def reference(messy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the same dates and settings as the killed one."""
    base = tmp_path_factory.mktemp("reference")
    shutil.copytree(messy / "runs", base / "runs", ignore=shutil.ignore_patterns("inference"))
    assert _cli(base, "--data", str(messy / "clean"), "--dates", KILLED_DATES, "--batch-size", "64") == 0
    return base


KILLED_DATES = "2024-01-02:2024-01-08"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_run_is_completed_by_the_rerun_with_identical_files(
    tmp_path: Path, messy: Path, reference: Path, sig: signal.Signals
) -> None:
    dates = KILLED_DATES
    victim = tmp_path / "victim"
    shutil.copytree(messy / "runs", victim / "runs", ignore=shutil.ignore_patterns("inference"))
    shutil.copytree(messy / "clean", victim / "data")
    proc = _subprocess(victim, dates)
    deadline = time.monotonic() + 60
    while _ok_dates(victim) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; give it more work"
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    done_before = _ok_dates(victim)
    assert 2 <= done_before < 5
    rerun = _subprocess(victim, dates)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    assert f"{done_before} skipped" in out.decode()
    names = sorted(p.name for p in (reference / "runs" / INFERENCE).glob("*.csv"))
    assert len(names) == 5
    for name in names:
        got = (victim / "runs" / INFERENCE / name).read_bytes()
        assert got == (reference / "runs" / INFERENCE / name).read_bytes(), name
        frame = pl.read_csv(got)
        assert frame.select(pl.struct("ts", "symbol").is_duplicated().any()).item() is False


@pytest.mark.s3
def test_an_s3_server_that_drops_out_for_a_moment_is_survived(
    messy: Path, s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from tthf.engine.store import open_store
    from tthf.engine.testing import free_port, start_moto

    port = free_port()
    server = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("TTHF_S3_ENDPOINT_URL", endpoint)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="flaky")
    data, store = "s3://flaky/market", "s3://flaky/runs"
    for day in DAYS[:2]:
        write_day(data, day, read_day(str(messy / "clean"), day))
    src, dst = open_store(str(messy / "runs")), open_store(store)
    for key in src.list(""):
        if "/inference/" not in key:
            dst.write_bytes(key, src.read_bytes(key))
    server.stop()  # down when the run starts; back 1.5 s later on the same port (moto keeps its state)
    restarted: list = []
    timer = threading.Timer(1.5, lambda: restarted.append(start_moto(port)))
    timer.start()
    try:
        started = time.monotonic()
        assert main(["--run", "jen", "--store", store, "--data", data, "--dates", "2024-01-02:2024-01-03"]) == 0
        assert time.monotonic() - started >= 1.0
        timer.join()
        out = open_store(f"{store}/{INFERENCE}")
        assert sorted(out.list("")) == ["2024-01-02.csv", "2024-01-03.csv", "manifest.json"]
        assert pl.read_csv(out.read_bytes("2024-01-02.csv"))["ret_1h"].is_finite().all()
    finally:
        timer.join()
        for s in restarted:
            s.stop()

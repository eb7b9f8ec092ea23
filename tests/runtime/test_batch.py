"""tthf-run end to end on a tiny real run: dense, sparse, resume, failures, S3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tthf.cli.run import main
from tthf.engine import runs
from tthf.engine.data.calendar import session_bounds
from tthf.engine.data.marketdata import read_day, write_day
from tthf.engine.features import build_day
from tthf.engine.features.scalers import Scalers
from tthf.engine.model.network import load_checkpoint
from tthf.engine.runs import open_run
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions
from tthf.engine.testing import DAYS, NO_QUOTE_SYMBOL, make_data, make_run, with_null_quotes
from tthf.engine.windows import count_windows

RUN_DIR = Path("demo/three_headed_transformer/jennifer/inference")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tiny")
    make_run(str(base / "runs"), make_data(base / "data", n_symbols=4))
    return base


@pytest.fixture
def work(tiny: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny, tmp_path, dirs_exist_ok=True)
    # the run records its training data root; point it at this copy
    cfg_path = tmp_path / "runs" / RUN_DIR.parent / runs.CONFIG
    cfg = json.loads(cfg_path.read_text())
    cfg["data_root"] = str(tmp_path / "data")
    cfg_path.write_text(json.dumps(cfg))
    return tmp_path


def _run(work: Path, *args: str) -> int:
    return main(["--run", "jen", "--store", str(work / "runs"), *args])


def _read(work: Path, day: str) -> pl.DataFrame:
    return pl.read_csv(work / "runs" / RUN_DIR / f"{day}.csv")


def test_dense_predictions_equal_the_model_on_naively_cut_windows(work: Path) -> None:
    assert _run(work, "--dates", "2024-01-03", "--dense") == 0
    got = _read(work, "2024-01-03")
    run = runs.Run.open(runs.find_run(str(work / "runs"), "jennifer"))
    day = build_day(read_day(str(work / "data"), DAYS[1]), DAYS[1])
    scaled = Scalers.from_json(run.read_text(runs.SCALERS)).transform_day(day, run.config.feature_names)
    model = load_checkpoint(run.read_bytes(runs.CHECKPOINT), run.config.model).eval()
    rows, xs = [], []
    for s, sym in enumerate(day.symbols):
        for t in range(29, len(day.minutes)):
            if day.mask[s, t - 29 : t + 1].all():
                rows.append((sym, t))
                xs.append(scaled[s, t - 29 : t + 1])
    assert got.height == len(rows) > 0
    with torch.inference_mode():
        ref = [o.numpy() for o in model(torch.from_numpy(np.stack(xs)))]
    expected = pl.DataFrame(
        {
            "ts": [str(day.minutes[t].astype("datetime64[s]")) + "Z" for _, t in rows],
            "symbol": [s for s, _ in rows],
            "ret_1h": ref[0],
            "vol_10m": ref[1],
            "ret_conf": ref[2],
            "vol_conf": ref[3],
        }
    ).sort("ts", "symbol")
    assert got["ts"].to_list() == expected["ts"].to_list()
    assert got["symbol"].to_list() == expected["symbol"].to_list()
    assert (got["ts"] == got["source_ts"]).all()
    for name in ("ret_1h", "vol_10m", "ret_conf", "vol_conf"):
        np.testing.assert_allclose(got[name].to_numpy(), expected[name].to_numpy(), rtol=1e-5, atol=1e-6)


def test_sparse_rows_equal_dense_rows_at_sampled_minutes(work: Path) -> None:
    assert _run(work, "--dates", "2024-01-03", "--dense") == 0
    dense = _read(work, "2024-01-03")
    assert _run(work, "--dates", "2024-01-03", "--sample-every", "7") == 0
    sparse = _read(work, "2024-01-03")
    keys = ["ts", "symbol"]
    assert sparse.join(dense.select(keys), on=keys, how="anti").height == 0
    sampled = sparse.filter(pl.col("ts") == pl.col("source_ts"))
    assert sampled.equals(dense.join(sampled.select(keys), on=keys, how="semi"))
    filled = sparse.filter(pl.col("ts") != pl.col("source_ts"))
    assert filled.height > 5 * sampled.height
    joined = filled.join(sampled, left_on=["source_ts", "symbol"], right_on=["ts", "symbol"], suffix="_src")
    assert joined.height == filled.height  # every filled row points at a sampled row of its symbol
    assert (joined["ret_1h"] == joined["ret_1h_src"]).all()


def test_rerun_skips_done_dates_and_overwrite_redoes_them_identically(
    work: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _run(work, "--dates", "2024-01", "--dense") == 0
    files = {p.name: p.read_bytes() for p in (work / "runs" / RUN_DIR).glob("*.csv")}
    assert sorted(files) == [f"{d}.csv" for d in DAYS]
    capsys.readouterr()
    assert _run(work, "--dates", "2024-01", "--dense") == 0
    assert "3 skipped" in capsys.readouterr().out
    assert _run(work, "--dates", "2024-01", "--dense", "--overwrite") == 0
    assert {p.name: p.read_bytes() for p in (work / "runs" / RUN_DIR).glob("*.csv")} == files
    manifest = json.loads((work / "runs" / RUN_DIR / "manifest.json").read_text())
    ok = {d: v for d, v in manifest["dates"].items() if v["status"] == "ok"}
    assert sorted(ok) == [d.isoformat() for d in DAYS]
    assert all(v["rows"] > 0 and v["backend"] == "torch" and v["seconds"]["total"] > 0 for v in ok.values())
    # the other trading days of January are recorded as having no data
    assert {v["status"] for d, v in manifest["dates"].items() if d not in ok} == {"no_data"}


def test_a_manifest_from_an_older_tthf_is_replaced_with_a_warning_and_its_dates_redone(
    work: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, options = str(work / "runs"), RunOptions(dates="2024-01", dense=True)
    run_inference(open_run(store, "jen"), options)
    path = work / "runs" / RUN_DIR / "manifest.json"
    older = json.loads(path.read_text())
    for entry in older["dates"].values():  # the date entries of a tthf before e02a327
        del entry["executor"], entry["worker"]
    path.write_text(json.dumps(older))
    with caplog.at_level("WARNING", logger="tthf.run"):
        summary = run_inference(open_run(store, "jen"), options)
    assert "missing key(s) ['executor', 'worker'] in the entry of 2024-01-02" in caplog.text
    assert [r.status for r in summary.results if r.status != "no_data"] == ["ok"] * len(DAYS)
    assert all("worker" in entry for entry in json.loads(path.read_text())["dates"].values())
    assert [r.status for r in run_inference(open_run(store, "jen"), options).by_status("skipped")] == ["skipped"] * len(
        DAYS
    )


def test_a_date_without_data_is_reported_not_fatal(work: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run(work, "--dates", "2024-01-03,2024-01-05", "--dense") == 0
    out = capsys.readouterr()
    assert "2024-01-05  no_data" in out.err
    assert "1 ok" in out.out and "1 without data" in out.out


def test_an_unreadable_date_is_recorded_and_the_others_finish(work: Path, capsys: pytest.CaptureFixture) -> None:
    part = work / "data" / "date=2024-01-03" / "part-0.parquet"
    pl.read_parquet(part).drop("ask").write_parquet(part)
    assert _run(work, "--dates", "2024-01", "--dense") == 1
    out = capsys.readouterr().out
    assert "2 ok, 1 failed" in out
    assert "FAILED 2024-01-03" in out and "ask" in out and "part-0.parquet" in out
    manifest = json.loads((work / "runs" / RUN_DIR / "manifest.json").read_text())
    assert manifest["dates"]["2024-01-03"]["status"] == "failed"
    assert not (work / "runs" / RUN_DIR / "2024-01-03.csv").exists()
    assert _run(work, "--dates", "2024-01", "--dense", "--fail-fast") == 1
    assert "0 ok, 1 failed, 1 skipped" in capsys.readouterr().out  # stopped before 2024-01-04


def test_unknown_run_is_a_one_line_error_listing_candidates(work: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--run", "nobody", "--store", str(work / "runs"), "--dates", "2024"]) == 4
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no run matches 'nobody'" in err and "demo/three_headed_transformer/jennifer" in err


@pytest.mark.s3
def test_end_to_end_on_s3(work: Path, s3_bucket: str) -> None:
    from tthf.engine.data.marketdata import write_day
    from tthf.engine.store import open_store

    data_uri, store_uri = f"{s3_bucket}/market", f"{s3_bucket}/runs"
    for day in DAYS:
        write_day(data_uri, day, read_day(str(work / "data"), day))
    src, dst = open_store(str(work / "runs")), open_store(store_uri)
    for key in src.list(""):
        dst.write_bytes(key, src.read_bytes(key))
    assert main(["--run", "jen", "--store", store_uri, "--data", data_uri, "--dates", "2024-01-02:2024-01-04"]) == 0
    out = open_store(f"{store_uri}/{RUN_DIR}")
    assert sorted(out.list("")) == sorted([f"{d}.csv" for d in DAYS] + ["manifest.json"])
    assert _run(work, "--dates", "2024-01-02", "--data", str(work / "data")) == 0
    assert out.read_bytes("2024-01-02.csv") == (work / "runs" / RUN_DIR / "2024-01-02.csv").read_bytes()


@pytest.mark.slow
def test_onnxruntime_and_torch_runs_agree_within_the_fp32_tolerance(work: Path) -> None:
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig
    from tthf.export.validate import tolerances

    run = runs.Run.open(runs.find_run(str(work / "runs"), "jennifer"))
    export_run(run, ExportConfig(), data=str(work / "data"))
    spec = f"{DAYS[0]}:{DAYS[-1]}"
    assert _run(work, "--dates", spec, "--dense", "--backend", "torch") == 0
    reference = {d: _read(work, d.isoformat()) for d in DAYS}
    assert _run(work, "--dates", spec, "--dense", "--backend", "onnxruntime") == 0
    manifest = json.loads((work / "runs" / RUN_DIR / "manifest.json").read_text())
    assert {v["backend"] for v in manifest["dates"].values() if v["status"] == "ok"} == {"onnxruntime"}
    for day, ref in reference.items():
        got = _read(work, day.isoformat())
        assert got.select("ts", "symbol", "source_ts").equals(ref.select("ts", "symbol", "source_ts"))
        for name, tol in tolerances("fp32", run.config.model).items():
            np.testing.assert_allclose(
                got[name].to_numpy(), ref[name].to_numpy(), atol=tol.atol, rtol=tol.rtol, err_msg=f"{day} {name}"
            )


def test_null_quotes_and_a_symbol_without_quotes_leave_every_date_ok(work: Path) -> None:
    """Batch with a feed's null quotes: every date ok, counted; the quote-less symbol changes no other row."""
    for name, no_quote in (("nulls", True), ("ref", False)):
        for day in DAYS:
            write_day(str(work / name), day, with_null_quotes(read_day(str(work / "data"), day), no_quote=no_quote))
    out = work / "runs" / RUN_DIR
    files = {}
    for name in ("ref", "nulls"):
        options = RunOptions(dates="2024-01-02:2024-01-04", dense=True, backend="torch", data_root=str(work / name))
        summary = run_inference(open_run(str(work / "runs"), "jen"), options)
        assert [r.status for r in summary.results] == ["ok"] * len(DAYS)
        files[name] = {d: (out / f"{d}.csv").read_bytes() for d in DAYS}
    assert files["nulls"] == files["ref"]  # byte for byte: the quote-less symbol has no row and moves no other
    manifest = json.loads((out / "manifest.json").read_text())["dates"]
    for day in DAYS:
        entry, raw = manifest[day.isoformat()], read_day(str(work / "nulls"), day)
        session = raw.filter(pl.col("ts").is_between(*session_bounds(day), closed="left"))
        assert entry["status"] == "ok" and entry["counts"]["symbols_no_quote"] == 1
        assert entry["counts"]["quote_null"] == session.get_column("bid").null_count() > 0
        got = pl.read_csv(out / f"{day}.csv")
        assert NO_QUOTE_SYMBOL not in got["symbol"].to_list() and got["symbol"].n_unique() == 4
        assert entry["rows"] == got.height == count_windows(build_day(raw, day).mask)


def test_sub_minute_stamps_give_the_predictions_of_minute_stamps(work: Path) -> None:
    """Bars stamped anywhere inside their minute are floored: same files as the same bars stamped at minute starts."""
    rng = np.random.default_rng(5)
    for day in DAYS[:2]:
        raw = read_day(str(work / "data"), day)
        late = pl.Series(rng.integers(1, 60_000_000, raw.height)).cast(pl.Duration("us"))  # 1 us .. 59.999999 s
        write_day(str(work / "floored"), day, raw.with_columns(pl.col("ts") + late))
    out, dates = work / "runs" / RUN_DIR, ("--dates", "2024-01-02:2024-01-03", "--dense")
    assert _run(work, *dates) == 0
    ref = {d: (out / f"{d}.csv").read_bytes() for d in DAYS[:2]}
    ref_counts = {d: e["counts"] for d, e in json.loads((out / "manifest.json").read_text())["dates"].items()}
    assert _run(work, *dates, "--data", str(work / "floored")) == 0
    assert {d: (out / f"{d}.csv").read_bytes() for d in DAYS[:2]} == ref
    for day, entry in json.loads((out / "manifest.json").read_text())["dates"].items():
        counts = entry["counts"]
        assert entry["status"] == "ok" and counts["ts_floored"] == counts["rows_in"] > 0
        assert {**counts, "ts_floored": 0} == ref_counts[day]


def test_dates_with_no_session_row_or_renamed_columns_fail_with_the_fix_and_are_retried(
    work: Path, capsys: pytest.CaptureFixture
) -> None:
    outside, renamed = (work / "data" / f"date={d}" / "part-0.parquet" for d in ("2024-01-03", "2024-01-04"))
    good = {path: pl.read_parquet(path) for path in (outside, renamed)}
    # the extended-hours rows only: every row of the date is outside 09:30-16:00 New York
    good[outside].filter(~pl.col("ts").is_between(*session_bounds(DAYS[1]), closed="left")).write_parquet(outside)
    n = pl.read_parquet(outside).height
    good[renamed].rename({"bid": "Bid", "ask": "Ask"}).write_parquet(renamed)
    assert _run(work, "--dates", "2024-01", "--dense") == 1
    out = capsys.readouterr().out
    assert "1 ok, 2 failed" in out and "FAILED 2024-01-03" in out and "FAILED 2024-01-04" in out
    entries = json.loads((work / "runs" / RUN_DIR / "manifest.json").read_text())["dates"]
    assert entries["2024-01-03"]["status"] == "failed" and entries["2024-01-03"]["rows"] == 0
    assert entries["2024-01-03"]["reason"].startswith(
        f"{work / 'data'}/date=2024-01-03: all {n} rows are outside the regular session of 2024-01-03, "
        "09:30-16:00 America/New_York (14:30-21:00 UTC): first ts 2024-01-03T"
    )
    assert "Are the timestamps UTC instants?" in entries["2024-01-03"]["reason"]
    assert entries["2024-01-04"]["status"] == "failed" and entries["2024-01-04"]["reason"].startswith(
        f"{renamed}: required columns 'bid' (double), 'ask' (double) are missing; the file has ['symbol', 'ts', 'Bid', "
    )
    assert "rename Bid->bid, Ask->ask." in entries["2024-01-04"]["reason"]
    # fixed data: the failed dates are computed again, the ok one is skipped
    for path, frame in good.items():
        frame.write_parquet(path)
    assert _run(work, "--dates", "2024-01", "--dense") == 0
    assert "2 ok, 0 failed, 1 skipped" in capsys.readouterr().out


def test_bars_stamped_with_their_end_are_predicted_as_stamped_with_a_warning(
    work: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = read_day(str(work / "data"), DAYS[1])
    session = raw.filter(pl.col("ts").is_between(*session_bounds(DAYS[1]), closed="left"))
    write_day(str(work / "end"), DAYS[1], session.with_columns(pl.col("ts") + pl.duration(minutes=1)))
    options = RunOptions(dates="2024-01-03", dense=True, backend="torch", data_root=str(work / "end"))
    with caplog.at_level("WARNING", logger="tthf.features"):
        (result,) = run_inference(open_run(str(work / "runs"), "jen"), options).results
    assert result.status == "ok" and result.rows > 0
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "tthf.features"]
    assert warning.startswith(f"{work / 'end'}/date=2024-01-03: the bars of 2024-01-03 look stamped with their")
    assert "tthf-ingest csv --bar-label end" in warning


def test_dates_that_arrive_out_of_order_are_recorded_at_once_and_reported_in_date_order(work: Path) -> None:
    from tthf.engine.inference_manifest import DateResult
    from tthf.engine.runtime.plan import plan_inference
    from tthf.engine.runtime.recorder import Recorder

    assert _run(work, "--dates", "2024-01-02", "--dense") == 0
    run = runs.open_run(str(work / "runs"), "jennifer")
    plan = plan_inference(run, RunOptions(dates="2024-01-02:2024-01-05", dense=True))
    assert plan.todo == DAYS[1:] and [r.date for r in plan.skipped] == ["2024-01-02"]
    seen: list[str] = []
    recorder = Recorder(plan, lambda r: seen.append(f"{r.date} {r.status}"))
    assert seen == ["2024-01-05 no_data"]
    recorder.arrived(DateResult("2024-01-04", "ok", executor="ray", worker="w:2"))  # a Ray worker finished first
    assert seen == ["2024-01-05 no_data"]
    manifest = json.loads((work / "runs" / RUN_DIR / "manifest.json").read_text())
    assert manifest["dates"]["2024-01-04"]["worker"] == "w:2"  # recorded as it arrived
    recorder.arrived(DateResult("2024-01-03", "failed", reason="bad", executor="ray", worker="w:1"))
    assert seen == ["2024-01-05 no_data", "2024-01-02 skipped", "2024-01-03 failed", "2024-01-04 ok"]
    recorder.close()
    assert [r.date for r in recorder.summary(1.0).results] == ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    manifest = json.loads((work / "runs" / RUN_DIR / "manifest.json").read_text())
    assert manifest["dates"]["2024-01-05"]["status"] == "no_data"
    assert manifest["dates"]["2024-01-02"]["executor"] == "local"


# --host-workers: read + features of several dates at once, in threads or worker processes


def _outputs(work: Path, fmt: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "runs" / RUN_DIR).glob(f"*.{fmt}"))}


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("mode", "fmt", "host_mode"),
    [("--dense", "csv", "threads"), ("--sample-every=7", "parquet", "threads"), ("--dense", "csv", "processes")],
)
def test_host_workers_write_the_same_bytes_and_settings_key(work: Path, mode: str, fmt: str, host_mode: str) -> None:
    other = work / "other"
    shutil.copytree(work / "runs", other / "runs")
    args = ["--dates", "2024-01", mode, "--format", fmt]
    assert _run(work, *args) == 0
    two_workers = ["--host-workers", "2", "--host-mode", host_mode]
    assert main(["--run", "jen", "--store", str(other / "runs"), *args, *two_workers]) == 0
    ours, theirs = _outputs(work, fmt), _outputs(other, fmt)
    assert sorted(ours) == [f"{d}.{fmt}" for d in DAYS] and ours == theirs
    one = json.loads((work / "runs" / RUN_DIR / "manifest.json").read_text())
    two = json.loads((other / "runs" / RUN_DIR / "manifest.json").read_text())
    assert one["settings"]["host_workers"] == 1 and two["settings"]["host_workers"] == 2
    assert two["settings"]["host_mode"] == host_mode
    assert one["settings"]["key"] == two["settings"]["key"]
    for day in DAYS:
        entry, seconds = two["dates"][day.isoformat()], two["dates"][day.isoformat()]["seconds"]
        assert entry["counts"] == one["dates"][day.isoformat()]["counts"]
        stages = {"read", "features", "predict", "encode"} | ({"transfer"} if host_mode == "processes" else set())
        assert stages <= set(seconds) and "host" not in seconds
        assert ("transfer" in seconds) == (host_mode == "processes")


@pytest.mark.timeout(240)
def test_host_workers_record_a_bad_date_with_its_reason_resume_and_fail_fast(
    work: Path, capsys: pytest.CaptureFixture
) -> None:
    part = work / "data" / "date=2024-01-03" / "part-0.parquet"
    pl.read_parquet(part).drop("ask").write_parquet(part)
    assert _run(work, "--dates", "2024-01", "--dense", "--host-workers", "2") == 1
    out = capsys.readouterr().out
    assert "2 ok, 1 failed" in out and "FAILED 2024-01-03" in out and "ask" in out and "part-0.parquet" in out
    manifest = json.loads((work / "runs" / RUN_DIR / "manifest.json").read_text())
    assert manifest["dates"]["2024-01-03"]["status"] == "failed"
    assert "part-0.parquet" in manifest["dates"]["2024-01-03"]["reason"]
    # a rerun in this process skips what the workers did; --fail-fast stops at the bad date
    assert _run(work, "--dates", "2024-01", "--dense", "--fail-fast") == 1
    assert "0 ok, 1 failed, 1 skipped" in capsys.readouterr().out
    assert _run(work, "--dates", "2024-01", "--dense", "--fail-fast", "--host-workers", "3") == 1
    assert "0 ok, 1 failed, 1 skipped" in capsys.readouterr().out
    args = ("--dates", "2024-01", "--dense", "--fail-fast", "--host-workers", "2", "--host-mode", "processes")
    assert _run(work, *args) == 1
    assert "0 ok, 1 failed, 1 skipped" in capsys.readouterr().out


def test_host_workers_must_be_positive_and_local() -> None:
    from tthf.engine.runtime.options import RayConfig
    from tthf.errors import UsageError

    with pytest.raises(UsageError, match="--host-workers must be >= 1, got 0"):
        RunOptions(dates="2024", host_workers=0)
    with pytest.raises(UsageError, match="--executor local"):
        RunOptions(dates="2024", host_workers=2, executor="ray", ray=RayConfig())
    assert RunOptions(dates="2024", host_workers=3).host_workers_for(5) == 3
    assert RunOptions(dates="2024", host_workers=3).host_workers_for(2) == 2  # never more workers than dates
    assert RunOptions(dates="2024").host_workers_for(4) == 1
    with pytest.raises(UsageError, match="unknown --host-mode 'forks'; use one of threads, processes"):
        RunOptions(dates="2024", host_workers=2, host_mode="forks")

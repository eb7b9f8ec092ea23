"""The user's own feature files as the run's inputs: import with a golden check, dense and sparse runs,
mixed sources, and the refusals of bad files (tests/importing/user_pipeline.py writes the user's side)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from user_pipeline import (
    FILE_NAMES,
    GAP_MINUTE,
    GOLDEN_COLUMNS,
    HOLEY_DAY,
    LATE_START,
    SEQ_LEN,
    USER_FEATURES,
    Files,
    User,
    feature_frame,
    files_spec,
    import_files_run,
    user_predict,
    write_files,
)

from tthf.cli import check as check_cli
from tthf.cli import eval as eval_cli
from tthf.cli import import_run as import_cli
from tthf.cli import run as run_cli
from tthf.engine.config import OUTPUT_NAMES, FeatureFiles
from tthf.engine.data.calendar import session_minutes
from tthf.engine.data.featurefiles import list_feature_dates, read_feature_day
from tthf.engine.runs import open_run
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS
from tthf.errors import DataError, UsageError
from tthf.export.api import export_run
from tthf.export.config import ExportConfig
from tthf.export.importing import import_run, load_spec
from tthf.export.importing.golden import differing_keys

#: the fp32 bar against the user's script, in output units (as tests/importing/test_import.py)
TOLERANCE = 2e-6
CLEAN_DAY = DAYS[1]


@pytest.fixture(scope="module")
def files(user: User, tmp_path_factory: pytest.TempPathFactory) -> Files:
    return write_files(user, tmp_path_factory.mktemp("files"))


@pytest.fixture(scope="module")
def imported(user: User, files: Files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the user's run imported from their feature files (no golden) and exported: shared by the
    tests that only read it."""
    return import_files_run(user, files.root, tmp_path_factory.mktemp("imported") / "store")


def golden(folder: Path, dates: list[dt.date], mode: str = "dense") -> str:
    columns = ", ".join(f'{k} = "{v}"' for k, v in GOLDEN_COLUMNS.items())
    days = ", ".join(f'"{d}"' for d in dates)
    return f'\n[golden]\npath = "{folder}/{{date}}.csv"\nmode = "{mode}"\ndates = [{days}]\ncolumns = {{ {columns} }}\n'


def write(user: User, name: str, text: str) -> Path:
    path = user.folder / name
    path.write_text(text)
    return path


def utc(ts: pl.Series) -> pl.Series:
    return ts.str.to_datetime(time_unit="us").dt.convert_time_zone("UTC")


def same_keys(got: pl.DataFrame, want: pl.DataFrame) -> dict[str, float]:
    """Per output max |tthf - user| over exactly the same (symbol, ts) keys (asserted)."""
    got = got.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    want = want.with_columns(utc(want["ts"]))
    joined = got.join(want, on=["symbol", "ts"], how="full", coalesce=True)
    assert joined.height == got.height == want.height > 0, "the same keys on both sides"
    return {n: float((joined[n] - joined[GOLDEN_COLUMNS[n]]).abs().max()) for n in OUTPUT_NAMES}


@pytest.mark.slow
def test_feature_files_import_with_a_golden_check_and_run_dense_and_sparse_like_the_users_script(
    user: User, files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    spec = write(user, "files.toml", files_spec(user, files.root, golden=golden(files.dense, [CLEAN_DAY])))
    assert import_cli.main(["--spec", str(spec), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "golden check (dense)" in out and "imported" in out
    run = open_run(str(store), "jennifer")
    assert run.config.feature_files is not None and run.config.feature_files.columns == FILE_NAMES
    assert run.config.imported is not None and run.config.imported.computed == []
    record = json.loads(run.read_text("import.json"))
    assert record["golden"]["passed"] and record["golden"]["dates"][0]["matched"] > 1000
    export_run(run, ExportConfig(real_windows=64, random_batches=(1,)))  # held-out windows from the files
    common = ["--run", "jennifer", "--store", str(store), "--dates", str(CLEAN_DAY), "--backend", "onnxruntime"]
    assert run_cli.main([*common, "--dense"]) == 0
    got = pl.read_csv(run.store.uri(f"inference/{CLEAN_DAY}.csv"), try_parse_dates=True)
    diff = same_keys(got.drop("source_ts"), pl.read_csv(files.dense / f"{CLEAN_DAY}.csv"))
    assert max(diff.values()) <= TOLERANCE, diff
    assert run_cli.main([*common, "--overwrite"]) == 0  # sparse, forward-filled: the user's sparse file
    got = pl.read_csv(run.store.uri(f"inference/{CLEAN_DAY}.csv"), try_parse_dates=True)
    diff = same_keys(got.drop("source_ts"), pl.read_csv(files.sparse / f"{CLEAN_DAY}.csv"))
    assert max(diff.values()) <= TOLERANCE, diff
    # tthf-eval scores against the label columns of the files (no raw bars are read)
    assert eval_cli.main(["--run", "jennifer", "--store", str(store), "--dates", str(CLEAN_DAY), "--name", "e"]) == 0
    metrics = json.loads(run.read_text("evaluation/e/metrics.json"))
    assert metrics["data_root"] == str(files.root) and metrics["dates"]["scored"] == [str(CLEAN_DAY)]
    labels = feature_frame(user, CLEAN_DAY, holes=False).filter(pl.col("fwd_ret_60m").is_not_null())
    assert 0 < metrics["pooled"]["ret_1h"]["n"] <= labels.height
    # a date that fails is named, not "no predictions to score ... write them first"
    config = json.loads(run.read_text("config.json"))
    config["feature_files"]["labels"] = {"ret_1h": "fwd_nope"}
    run.write_text("config.json", json.dumps(config))
    assert eval_cli.main(["--run", "jennifer", "--store", str(store), "--dates", str(CLEAN_DAY), "--name", "f"]) == 4
    err = capsys.readouterr().err
    assert "could be scored: 1 failed" in err and "['fwd_nope'] named by the run are missing" in err
    assert "write them first" not in err


def test_check_reads_the_runs_feature_files(user: User, imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = imported
    dates = f"{DAYS[0]}:{DAYS[-1]}"
    assert check_cli.main(["--run", "jennifer", "--store", str(store), "--dates", dates, "--json"]) == 0
    report = {d["date"]: d for d in json.loads(capsys.readouterr().out)["dates"]}
    holey, clean = report[str(HOLEY_DAY)], report[str(CLEAN_DAY)]
    full = clean["symbols"] * clean["minutes"]
    assert clean["rows"] == full and clean["coverage"] == 1.0
    assert holey["rows"] == full - LATE_START - 1 and holey["coverage"] < 1.0
    assert clean["windows"] == clean["symbols"] * (clean["minutes"] - SEQ_LEN + 1)
    assert holey["windows"] == clean["windows"] - LATE_START  # the late symbol's windows start at its first row
    nulls = feature_frame(user, CLEAN_DAY, holes=False).null_count()
    assert clean["nulls"][FILE_NAMES[3]] == nulls[FILE_NAMES[3]].item() > 0 and clean["nulls"][FILE_NAMES[0]] == 0
    assert check_cli.main(["--run", "jennifer", "--store", str(store), "--dates", dates]) == 0
    assert "null values per feature-file column" in capsys.readouterr().out


@pytest.mark.slow
def test_the_golden_check_reports_exactly_the_rows_where_windows_of_rows_and_of_minutes_differ(
    user: User, files: Files, imported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tthf.engine.runtime.backends import OnnxRuntimeBackend
    from tthf.export.importing.golden import check_golden

    spec = write(user, "holey.toml", files_spec(user, files.root, golden=golden(files.dense, [HOLEY_DAY])))
    assert import_cli.main(["--spec", str(spec), "--store", str(imported), "--check-golden"]) == 5
    err = capsys.readouterr().err
    assert "golden check failed" in err and f"extra rows of {HOLEY_DAY}" in err and "rows beyond the bar" in err
    run = open_run(str(imported), "jennifer")
    spec_golden = load_spec(
        write(user, "both.toml", files_spec(user, files.root, golden=golden(files.dense, [CLEAN_DAY, HOLEY_DAY])))
    ).golden
    assert spec_golden is not None
    backend = OnnxRuntimeBackend.from_onnx(run.read_bytes("model.onnx"))
    report = check_golden(spec_golden, run.config, run.load_scalers(), backend, open_store(run.config.data_root))
    by_date = {d.date: d for d in report.days}
    assert by_date[str(CLEAN_DAY)].passed
    day = by_date[str(HOLEY_DAY)]
    symbols = sorted(feature_frame(user, HOLEY_DAY, holes=False)["symbol"].unique().to_list())
    minutes = session_minutes(HOLEY_DAY).astype("datetime64[us]")

    def at(symbol: int, minute: int) -> tuple[str, dt.datetime]:
        return symbols[symbol], minutes[minute].item().replace(tzinfo=dt.timezone.utc)

    # tthf's windows count minutes: the gap minute has a window (the script has no row there); a symbol's day
    # starts at its first row in both, so the late symbol agrees
    assert day.missing == 0 and set(day.extra_rows.iter_rows()) == {at(2, GAP_MINUTE)}
    # windows over the gap hold 30 minutes in tthf (the gap filled from the minute before), 31 in the script:
    # they differ where the script's window still starts a minute earlier; from GAP+SEQ_LEN-1 on both hold
    # the same values again (the filled gap minute equals the minute before it)
    assert differing_keys(day) == {at(2, m) for m in range(GAP_MINUTE + 1, GAP_MINUTE + SEQ_LEN - 1)}
    assert not day.passed and "beyond" in report.table()
    # sparse: tthf's every-10th windows forward-filled against the user's sparse file
    sparse = load_spec(
        write(user, "sparse.toml", files_spec(user, files.root, golden=golden(files.sparse, [CLEAN_DAY], "sparse")))
    )
    assert sparse.golden is not None
    report = check_golden(sparse.golden, run.config, run.load_scalers(), backend, open_store(run.config.data_root))
    assert report.passed and report.days[0].matched == by_date[str(CLEAN_DAY)].matched


def test_mixed_sources_equal_the_script_on_tthfs_own_computed_values(user: User, files: Files, tmp_path: Path) -> None:
    from tthf.engine.data.marketdata import read_day
    from tthf.engine.features import build_day
    from tthf.engine.runtime.backends import OnnxRuntimeBackend
    from tthf.engine.runtime.day import DayHost, DayPredictor

    computed = USER_FEATURES[:10]
    spec = load_spec(write(user, "mixed.toml", files_spec(user, files.root, computed=computed)))
    assert spec.computed == computed
    store = str(tmp_path / "store")
    run = import_run(spec, store).run
    host = DayHost(run, open_store(run.config.data_root))
    backend = OnnxRuntimeBackend.from_onnx(run.read_bytes("model.onnx"))
    frame = DayPredictor(run, backend, stride=1, batch_size=4096).predict(host.features(host.read(CLEAN_DAY))).frame
    assert frame is not None and frame.height > 0
    # the reference: the user's script on their file with the computed names replaced by tthf's own values
    feats = build_day(read_day(str(user.data), CLEAN_DAY), CLEAN_DAY)
    own = {f"my_{n}": feats.features[..., feats.feature_names.index(n)].reshape(-1) for n in computed}
    file = (
        feature_frame(user, CLEAN_DAY, holes=False)
        .sort("symbol", "ts")
        .with_columns(pl.Series(k, v.astype(np.float64)) for k, v in own.items())
    )
    want = user_predict(user, file)
    got = frame.select("symbol", "ts", *OUTPUT_NAMES)
    want = want.with_columns(utc(want["ts"]))
    joined = got.join(want, on=["symbol", "ts"], how="inner")
    assert joined.height == got.height == want.height, "the same keys (the computed features mask nothing here)"
    worst = max(float((joined[n] - joined[GOLDEN_COLUMNS[n]]).abs().max()) for n in OUTPUT_NAMES)
    assert worst <= TOLERANCE
    # real time: raw bars as rows, the feature rows beside them, minute by minute and then the rest at once
    from tthf.engine.runtime.realtime import RealtimePredictor, apply_update

    raw = read_day(str(user.data), CLEAN_DAY)
    minutes = session_minutes(CLEAN_DAY).astype("datetime64[us]")
    rt = RealtimePredictor(run, backend)
    published = pl.DataFrame()
    for m in (SEQ_LEN - 2, SEQ_LEN, SEQ_LEN + 1, len(minutes) - 1):
        close = minutes[m].item().replace(tzinfo=dt.timezone.utc)
        new = (pl.col("ts") <= close) & (pl.col("ts") > published["ts"].max() if published.height else pl.lit(True))
        update = rt.update(raw.filter(new), close=close, features=file.filter(new))
        published = update.predictions if published.is_empty() else apply_update(published, update)
    assert published.height == frame.height and published["symbol"].equals(frame["symbol"])
    for n in OUTPUT_NAMES:
        assert np.allclose(published[n].to_numpy(), frame[n].to_numpy(), rtol=1e-6, atol=0), n
    # a feature row held back and sent 10 minutes late revises its symbol's minutes from its own on
    rt = RealtimePredictor(run, backend)
    at = [m.item().replace(tzinfo=dt.timezone.utc) for m in minutes[: SEQ_LEN + 15]]
    symbol = file["symbol"][0]
    held = (pl.col("symbol") == symbol) & (pl.col("ts") == at[SEQ_LEN + 2])
    published, updates = frame.clear(), []
    for m, close in enumerate(at):
        new = (pl.col("ts") <= close) & (pl.col("ts") > at[m - 1] if m else pl.lit(True))
        rows = pl.concat([file.filter(new & ~held), file.filter(held) if m == SEQ_LEN + 12 else file.clear()])
        updates.append(rt.update(raw.filter(new), close=close, features=rows))
        published = apply_update(published, updates[-1])
    revised = updates[SEQ_LEN + 12].revisions
    assert updates[SEQ_LEN + 12].late_rows == 1 and set(revised["symbol"]) == {symbol}
    assert revised["ts"].min() == at[SEQ_LEN + 2] and revised["ts"].max() == at[SEQ_LEN + 11]
    want = frame.filter(pl.col("ts") <= at[-1]).sort("ts", "symbol")
    assert published.height == want.height and published["symbol"].equals(want["symbol"])
    for n in OUTPUT_NAMES:
        assert np.allclose(published[n].to_numpy(), want[n].to_numpy(), rtol=1e-6, atol=0), n
    # its two feeds: no journal, so tthf-serve does not serve it and tthf-feed --run says so
    from tthf.engine.serving.client import feed_run

    with pytest.raises(UsageError, match="beside raw bars: real time keeps no journal"):
        RealtimePredictor(run, backend, journal=tmp_path / "journal")
    with pytest.raises(UsageError, match="beside raw bars; tthf-serve serves runs whose inputs all come"):
        feed_run(run, CLEAN_DAY)


def bad_root(tmp_path: Path, frame: pl.DataFrame, name: str = "{date}.parquet") -> FeatureFiles:
    path = tmp_path / name.replace("{date}", str(CLEAN_DAY)).replace("*", "part-0")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return FeatureFiles(root=str(tmp_path), columns=FILE_NAMES[:3], path=name)


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (lambda f: f.drop(FILE_NAMES[1]), rf"column\(s\) \['{FILE_NAMES[1]}'\] named by the run are missing.*fix"),
        (lambda f: f.rename({"symbol": "ticker"}), r"the symbol column 'symbol' is missing.*symbol = "),
        (lambda f: f.with_columns(pl.col("ts").cast(pl.String)), r"ts column 'ts' has type .*expected a timestamp"),
        (lambda f: f.with_columns(pl.col(FILE_NAMES[0]).cast(pl.String)), r"has type .*string.*expected a number"),
        (lambda f: pl.concat([f, f.head(1)]), r"2 rows share a \(symbol, minute\).*one row per symbol and minute"),
    ],
)
def test_bad_feature_files_are_refused_naming_file_column_and_fix(
    user: User, tmp_path: Path, change: object, expect: str
) -> None:
    frame = feature_frame(user, CLEAN_DAY, holes=False)
    files = bad_root(tmp_path, change(frame))  # type: ignore[operator]
    with pytest.raises(DataError, match=expect) as failed:
        read_feature_day(open_store(files.root), files, CLEAN_DAY, files.columns)
    assert f"{CLEAN_DAY}.parquet" in str(failed.value) and "\n" not in str(failed.value)


def test_date_folders_naive_local_stamps_and_rows_outside_the_session(user: User, tmp_path: Path) -> None:
    frame = feature_frame(user, CLEAN_DAY, holes=False)
    local = frame.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None))
    early = local.head(2).with_columns(pl.col("ts") - pl.duration(hours=3))  # pre-market rows: ignored, counted
    files = bad_root(tmp_path, pl.concat([early, local]), "date={date}/*.parquet")
    files = FeatureFiles(**{**files.__dict__, "timezone": "America/New_York"})
    assert list_feature_dates(open_store(files.root), files) == [CLEAN_DAY]
    counts: dict[str, int] = {}
    rows = read_feature_day(open_store(files.root), files, CLEAN_DAY, files.columns, counts=counts)
    assert rows["ts"].dtype == pl.Datetime("us", "UTC") and rows["ts"].min() < frame["ts"].min()
    from tthf.engine.features.files import file_grid

    grid = file_grid(rows, CLEAN_DAY, files.columns)
    assert grid.counts["file_outside_session"] == 2 and grid.present.all()
    assert np.array_equal(grid.values[0, :, 0], frame.filter(pl.col("symbol") == grid.symbols[0])[FILE_NAMES[0]])


@pytest.mark.slow
def test_real_time_from_feature_rows_equals_batch(user: User, imported: Path) -> None:
    from tthf.engine.runtime.realtime import RealtimePredictor, apply_update

    store = imported
    run = open_run(str(store), "jennifer")
    common = ["--run", "jennifer", "--store", str(store), "--dates", str(HOLEY_DAY), "--backend", "onnxruntime"]
    assert run_cli.main([*common, "--dense"]) == 0
    batch = pl.read_csv(run.store.uri(f"inference/{HOLEY_DAY}.csv"), try_parse_dates=True).sort("ts", "symbol")
    rows = feature_frame(user, HOLEY_DAY, holes=True).sort("ts", "symbol")
    minutes = session_minutes(HOLEY_DAY).astype("datetime64[us]")

    def instant(m: int) -> dt.datetime:
        return minutes[m].item().replace(tzinfo=dt.timezone.utc)

    rt = RealtimePredictor.from_run(str(store), "jennifer", backend="onnxruntime")
    published = pl.DataFrame()
    for m in range(SEQ_LEN + 5):  # minute by minute, then the rest of the day at once
        update = rt.update(rows.filter(pl.col("ts") == instant(m)), close=instant(m))
        published = update.predictions if published.is_empty() else apply_update(published, update)
    update = rt.update(rows.filter(pl.col("ts") > instant(SEQ_LEN + 4)), close=instant(len(minutes) - 1))
    published = apply_update(published, update).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    assert update.day_closed and published.height == batch.height
    assert (
        published["symbol"].equals(batch["symbol"])
        and (published["ts"] == batch["ts"].cast(published["ts"].dtype)).all()
    )
    for n in OUTPUT_NAMES:  # the same inputs; the outputs to the batch file's float32 digits
        assert np.allclose(published[n].to_numpy(), batch[n].to_numpy(), rtol=1e-6, atol=0), n
    with pytest.raises(DataError, match=r"column\(s\) \['my_spread_bps'\] named by the run are missing"):
        rt.reset(HOLEY_DAY)
        rt.update(rows.drop("my_spread_bps").head(3), close=instant(3))


@pytest.mark.slow
def test_real_time_feature_rows_late_and_corrected_revise_and_a_restart_replays_the_journal(
    user: User, imported: Path, tmp_path: Path
) -> None:
    """A row held back 50 minutes and a wrong row corrected later give revisions of their symbols' minutes; a new
    predictor on the journal replays the morning (same outputs); at the close the outputs are batch's bits
    (``OneByOne``: ONNX Runtime's bits may depend on the batch's size)."""
    from tthf.engine.runtime.backends import open_backend
    from tthf.engine.runtime.realtime import RealtimePredictor, apply_update
    from tthf.engine.testing import OneByOne, dense_batch

    run = open_run(str(imported), "jennifer")
    rows = feature_frame(user, HOLEY_DAY, holes=True)
    backend = OneByOne(open_backend(run, "onnxruntime"))
    batch = dense_batch(run, None, HOLEY_DAY, backend)
    minutes = [m.item().replace(tzinfo=dt.timezone.utc) for m in session_minutes(HOLEY_DAY).astype("datetime64[us]")]
    symbols = sorted(rows["symbol"].unique().to_list())
    held = (pl.col("symbol") == symbols[0]) & (pl.col("ts") == minutes[50])
    wrong = (pl.col("symbol") == symbols[2]) & (pl.col("ts") == minutes[60])
    sends = [(rows.filter((pl.col("ts") == m) & ~held), m) for m in minutes]
    sends[60] = (
        sends[60][0].with_columns(pl.when(wrong).then(pl.col(FILE_NAMES) * 1.5).otherwise(pl.col(FILE_NAMES))),
        minutes[60],
    )
    sends[100] = (pl.concat([sends[100][0], rows.filter(held | wrong)]), minutes[100])  # late, and the correction

    def feed(rt: RealtimePredictor, part: list, published: pl.DataFrame) -> tuple[pl.DataFrame, list]:
        updates = []
        for frame, minute in part:
            updates.append(rt.update(frame, close=minute))
            published = apply_update(published, updates[-1])
        return published, updates

    rt = RealtimePredictor(run, backend, journal=tmp_path)
    morning, updates = feed(rt, sends[:121], batch.clear())
    late = updates[100]
    assert late.late_rows == 2 and late.counts["corrections"] == 1
    revised = late.revisions.filter(pl.col(OUTPUT_NAMES[0]).is_not_null())
    assert set(revised["symbol"]) == {symbols[0], symbols[2]}  # only the two symbols' windows
    assert revised["ts"].min() == minutes[50] and revised["ts"].max() == minutes[100 - 1]
    # the morning's outputs after the correction are batch's
    want = batch.filter(pl.col("ts") <= minutes[120])
    assert morning.equals(want)
    assert morning.equals(want)
    # a restart: the journal replays the morning, its outputs come again, the feed resumes after the minute held
    again = RealtimePredictor(run, backend, journal=tmp_path)
    assert again.reset(HOLEY_DAY) == minutes[119]  # up to the call that closed its last minute: resend from there
    assert again.replayed().equals(morning.filter(pl.col("ts") <= minutes[119]))
    day, _ = feed(again, sends[120:], morning)
    assert day.equals(batch)
    # without the revisions the day would differ: the check can fail
    stale = pl.concat([u.predictions for u in updates]).sort("ts", "symbol")
    assert not stale.equals(batch.filter(pl.col("ts") <= minutes[120]))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_and_resume_read_the_feature_files_like_the_local_executor(
    imported: Path, ray_cluster: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = open_run(str(imported), "jennifer")
    common = ["--run", "jennifer", "--store", str(imported), "--dates", str(DAYS[0]), "--backend", "onnxruntime"]
    assert run_cli.main([*common, "--overwrite"]) == 0
    local = run.read_bytes(f"inference/{DAYS[0]}.csv")
    capsys.readouterr()
    assert run_cli.main(common) == 0  # resume: the same settings, nothing redone
    assert "1 skipped" in capsys.readouterr().out
    assert run_cli.main([*common, "--overwrite", "--executor", "ray"]) == 0
    assert run.read_bytes(f"inference/{DAYS[0]}.csv") == local

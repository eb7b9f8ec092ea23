"""tthf-import end to end: each model and scaler format in; export, tthf-run (dense, sparse), tthf-eval and
real time serve the run, and the predictions equal the user's own script's within the fp32 tolerance."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from user_pipeline import SEQ_LEN, USER_FEATURES, User, reference, write_spec

from tthf.cli import eval as eval_cli
from tthf.cli import export as export_cli
from tthf.cli import import_run as import_cli
from tthf.cli import run as run_cli
from tthf.engine import runs
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.runs import open_run
from tthf.engine.runtime.realtime import RealtimePredictor
from tthf.engine.testing import DAYS

#: the fp32 bar of the served outputs against the user's script (output units): ONNX Runtime / OpenVINO vs
#: torch, float32 scaling vs sklearn's float64, the affine map in float32
TOLERANCE = {"ret_1h": 2e-6, "vol_10m": 2e-6, "ret_conf": 2e-6, "vol_conf": 2e-6}
FORMATS = {
    "pt2": {"model": "model.pt2"},
    "onnx": {"model": "model.onnx"},
    "safetensors": {
        "model": "model.safetensors",
        "class": '"hfmodel:ThreeHeadedTransformer"',
        "code_path": '"."',
        "kwargs": f"{{ input_dim = {len(USER_FEATURES)} }}",
    },
}


def import_cmd(spec: Path, store: Path | str, *extra: str) -> int:
    return import_cli.main(["--spec", str(spec), "--store", str(store), *extra])


def predictions(store: Path, day: object) -> pl.DataFrame:
    run = open_run(str(store), "jennifer")
    return pl.read_csv(run.store.uri(f"inference/{day}.csv"), try_parse_dates=True)


def worst(got: pl.DataFrame, want: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output, the max |tthf - user script| over the same (symbol, minute) keys, which must all match."""
    ref = pl.DataFrame({k: v for k, v in want.items() if k != "ts"}).with_columns(
        pl.Series("ts", want["ts"]).cast(pl.Datetime("us", "UTC"))
    )
    joined = got.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))).join(
        ref, on=["symbol", "ts"], how="inner", suffix="_ref"
    )
    assert joined.height == ref.height > 0, "every window of the user's script has a tthf row"
    return {n: float((joined[n] - joined[f"{n}_ref"]).abs().max()) for n in OUTPUT_NAMES}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_imports_exports_runs_evaluates_and_serves_like_the_users_script(
    user: User, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = dict(FORMATS[fmt])
    spec = write_spec(user, f"{fmt}.toml", model=keys.pop("model"), **keys)
    store = tmp_path / "store"
    assert import_cmd(spec, store) == 0
    assert "imported" in capsys.readouterr().out
    run = open_run(str(store), "jennifer")
    assert run.config.source == "import" and run.config.feature_names == USER_FEATURES
    assert json.loads(run.read_text(runs.IMPORT_RECORD))["sources"]["model"]["format"] == run.config.imported.format
    assert export_cli.main(["--run", "jennifer", "--store", str(store), "--real-windows", "256"]) == 0
    # exported from the imported graph, byte for byte
    assert run.read_bytes("export/model.onnx") == run.read_bytes(runs.IMPORTED_MODEL)
    day = DAYS[2]
    want = reference(user, day)
    common = ["--run", "jennifer", "--store", str(store), "--dates", str(day), "--backend", "openvino"]
    assert run_cli.main([*common, "--dense"]) == 0
    dense = predictions(store, day)
    diff = worst(dense, want)
    assert all(diff[n] <= TOLERANCE[n] for n in OUTPUT_NAMES), diff
    if fmt == "pt2":  # the comparison catches a wrong input (two features swapped)
        assert max(worst(dense, reference(user, day, swap=True))[n] / TOLERANCE[n] for n in OUTPUT_NAMES) > 100
    # sparse: every 10th window, forward-filled; its sampled rows equal the dense ones
    assert run_cli.main([*common, "--overwrite"]) == 0
    sparse = predictions(store, day)
    sampled = sparse.filter(pl.col("ts") == pl.col("source_ts")).drop("source_ts")
    assert 0 < sampled.height < dense.height
    assert worst(sampled, reference(user, day, stride=10)) == pytest.approx(diff, abs=max(TOLERANCE.values()))
    # eval: the score confidence is ranked, not calibrated
    assert eval_cli.main(["--run", "jennifer", "--store", str(store), "--dates", str(day), "--name", "e"]) == 0
    metrics = json.loads(run.read_text("evaluation/e/metrics.json"))
    assert metrics["ret_conf"]["kind"] == "score" and metrics["ret_conf"]["coverage"] is None
    assert metrics["ret_conf"]["spearman_conf_vs_abs_err"] is not None  # still ranked
    assert metrics["vol_conf"]["kind"] == "band" and metrics["vol_conf"]["coverage"] is not None
    assert "ret_conf: a score states no probability" in run.read_text("evaluation/e/report.html")
    # real time: the day's bars at once, the day closed, give the batch rows of every minute
    rt = RealtimePredictor.from_run(str(store), "jennifer", backend="openvino")
    from tthf.engine.data.calendar import session_minutes
    from tthf.engine.data.marketdata import read_day

    close = session_minutes(day)[-1].astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc)
    rows = rt.update(read_day(str(user.data), day), close=close).predictions.sort("ts", "symbol")
    want = dense.sort("ts", "symbol")
    assert rows.height == want.height > 0 and rows["symbol"].equals(want["symbol"])
    for n in OUTPUT_NAMES:
        assert np.allclose(rows[n].to_numpy(), want[n].to_numpy(), rtol=0, atol=TOLERANCE[n])
    assert run.config.seq_len == SEQ_LEN


@pytest.mark.s3
def test_model_and_scalers_on_s3_into_an_s3_store(user: User, s3_bucket: str) -> None:
    from tthf.engine.store import open_store

    files = open_store(f"{s3_bucket}/user")
    for name in ("model.pt2", "scalers.skops"):
        files.write_bytes(name, (user.folder / name).read_bytes())
    spec = write_spec(user, "s3.toml", model=f"{s3_bucket}/user/model.pt2", scalers=f"{s3_bucket}/user/scalers.skops")
    assert import_cmd(spec, f"{s3_bucket}/runs") == 0
    run = open_run(f"{s3_bucket}/runs", "jennifer")
    assert run.config.source == "import" and run.exists(runs.IMPORTED_MODEL)
    record = json.loads(run.read_text(runs.IMPORT_RECORD))
    assert record["sources"]["model"]["path"].startswith("s3://")


def test_the_torch_backends_refuse_an_imported_run_with_what_to_do(user: User, tmp_path: Path) -> None:
    from tthf.engine.runtime.backends import open_backend
    from tthf.errors import RunFormatError
    from tthf.export.importing import import_run, load_spec

    import_run(load_spec(write_spec(user)), str(tmp_path / "store"))
    run = open_run(str(tmp_path / "store"), "jennifer")
    for name in ("torch", "auto"):  # auto without an export falls back to torch: the same message
        with pytest.raises(RunFormatError, match=r"was imported.*tthf-export --run jennifer_20250214.*openvino"):
            open_backend(run, name)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_ray_executor_writes_the_local_executors_bytes(user: User, tmp_path: Path, ray_cluster: str) -> None:
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig
    from tthf.export.importing import import_run, load_spec

    store = str(tmp_path / "store")
    import_run(load_spec(write_spec(user)), store)
    run = open_run(store, "jennifer")
    export_run(run, ExportConfig(real_windows=0, random_batches=(1,)))
    common = ["--run", "jennifer", "--store", store, "--dates", str(DAYS[2]), "--backend", "openvino", "--overwrite"]
    assert run_cli.main(common) == 0
    local = run.read_bytes(f"inference/{DAYS[2]}.csv")
    assert run_cli.main([*common, "--executor", "ray"]) == 0
    assert run.read_bytes(f"inference/{DAYS[2]}.csv") == local

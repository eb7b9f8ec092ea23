"""Prediction sets and explicit precision: a set holds one precision, ``auto`` stays fp32 unless the export opted in.

A stand-in reduced-precision variant (ONNX Runtime's outputs times 1 + 2**-9, precision bf16,
optional) runs on every CPU, so these tests need no bf16 hardware: the rules are the
manifest's and the plan's, not OpenVINO's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tthf.cli.run import main as run_main
from tthf.engine import runs
from tthf.engine.artifacts import Manifest
from tthf.engine.inference_manifest import RunManifest
from tthf.engine.runs import open_run
from tthf.engine.runtime.backends import BACKENDS, REGISTRY, open_backend
from tthf.engine.runtime.backends.base import BackendSpec, Needs
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions
from tthf.engine.testing import DAYS, ScaledStandIn, make_data, make_run
from tthf.errors import MixedPrecisionError, UsageError
from tthf.export import api
from tthf.export.config import ExportConfig

pytestmark = pytest.mark.slow

DAY = DAYS[-1].isoformat()


class _Half(ScaledStandIn):
    scale = 1.0 + 2**-9  # one bf16 rounding of every output: accepted at the bf16 bar


HALF = _Half.spec = BackendSpec(
    "stand-in-bf16", _Half, precision="bf16", device="cpu", needs=Needs(("onnxruntime",), runs.FP32_ONNX), optional=True
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, runs.Run]:
    """A tiny run exported with the stand-in variant registered (and accepted); the registry keeps it."""
    base = tmp_path_factory.mktemp("sets")
    store = str(base / "store")
    run = make_run(store, make_data(base / "data"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(REGISTRY, HALF.name, HALF)
        for module in ("tthf.engine.runtime.options", "tthf.cli.run"):  # --backend's choices
            patch.setattr(f"{module}.BACKENDS", (*BACKENDS, HALF.name))
        api.export_run(run, ExportConfig(real_windows=256, random_batches=(64,), quality_windows=0))
        assert Manifest.read(run).variants[HALF.name]["status"] == "accepted"
        yield store, run


def _run(store: str, **options: object) -> list[str]:
    summary = run_inference(open_run(store, "jennifer"), RunOptions(dates=DAY, **options))  # type: ignore[arg-type]
    return [r.status for r in summary.results]


def test_a_set_served_at_one_precision_never_takes_another_precisions_files(exported, capsys) -> None:
    store, run = exported
    assert _run(store, backend="onnxruntime") == ["ok"]
    fp32 = run.read_bytes(runs.output_key(DAYS[-1], "csv"))
    with pytest.raises(MixedPrecisionError, match=r"holds predictions at fp32 for 1 date.*--predictions bf16"):
        _run(store, backend=HALF.name)
    assert run.read_bytes(runs.output_key(DAYS[-1], "csv")) == fp32  # refused before any date was computed
    assert _run(store, backend=HALF.name, predictions="bf16") == ["ok"]
    assert _run(store, backend=HALF.name, predictions="bf16") == ["skipped"]  # resumes its own precision
    with pytest.raises(MixedPrecisionError, match="holds predictions at bf16"):
        _run(store, backend="onnxruntime", predictions="bf16")
    manifest = RunManifest.load(run, "bf16")
    assert manifest is not None and manifest.predictions == "bf16" and manifest.settings.precision == "bf16"
    assert manifest.dates[DAY].precision == "bf16" and manifest.dates[DAY].backend == HALF.name
    assert RunManifest.load(run).settings.precision == "fp32"  # type: ignore[union-attr]
    assert run.exists(runs.output_key(DAYS[-1], "csv", "bf16"))
    argv = ["--run", "jen", "--store", store, "--dates", DAY, "--backend", HALF.name]
    assert run_main(argv) == MixedPrecisionError.exit_code
    err = capsys.readouterr().err.strip()
    assert "never mixes precisions" in err and len(err.splitlines()) == 1


def test_a_manifest_from_before_precisions_were_recorded_still_refuses_by_backend(exported) -> None:
    store, run = exported
    _run(store, backend="onnxruntime", predictions="old")
    manifest = RunManifest.load(run, "old")
    assert manifest is not None
    manifest.dates[DAY].precision = None  # as an older tthf wrote it: the backend name tells the precision
    manifest.write(run)
    with pytest.raises(MixedPrecisionError, match="holds predictions at fp32"):
        _run(store, backend=HALF.name, predictions="old")
    run.store.delete(runs.output_key(DAYS[-1], "csv", "old"))  # no file left: nothing to mix with
    assert _run(store, backend=HALF.name, predictions="old") == ["ok"]


def test_auto_stays_fp32_unless_the_export_opted_in(exported) -> None:
    _, run = exported
    original = Manifest.read(run)
    assert open_backend(run, "auto").precision == "fp32"
    manifest = Manifest.read(run)
    manifest.auto_precision = "bf16"  # what tthf-export --auto-precision bf16 records
    manifest.write(run)
    try:
        # the stand-in, or openvino-bf16 where this CPU has native bf16 and export accepted it
        assert open_backend(run, "auto").precision == "bf16"
        for name, record in manifest.variants.items():
            if record["precision"] == "bf16":
                manifest.variants[name] = {**record, "status": "rejected", "reason": "test"}
        manifest.write(run)
        assert open_backend(run, "auto").precision == "fp32"  # opted in, but rejected: fp32
    finally:
        original.write(run)


def test_the_settings_key_of_a_variant_follows_its_files(exported) -> None:
    from tthf.engine.runtime.plan import settings_key

    _, run = exported
    options = RunOptions(dates=DAY)
    fp32 = settings_key(run, options, 10, REGISTRY["onnxruntime"], "/data")
    half = settings_key(run, options, 10, HALF, "/data")
    assert fp32 != half
    original = Manifest.read(run)
    manifest = Manifest.read(run)
    manifest.artifacts[runs.FP32_ONNX]["sha256"] = "0" * 64  # as if re-exported with other bytes
    manifest.write(run)
    try:
        assert settings_key(run, options, 10, HALF, "/data") != half
        assert settings_key(run, options, 10, REGISTRY["onnxruntime"], "/data") == fp32  # fp32 keys unchanged
    finally:
        original.write(run)


def test_export_records_the_opt_in_and_refuses_int8_without_int8() -> None:
    with pytest.raises(UsageError, match="needs --int8"):
        ExportConfig(auto_precision="int8")
    with pytest.raises(UsageError, match="unknown --auto-precision"):
        ExportConfig(auto_precision="fp16")
    manifest = Manifest(run="r", sources={}, export_config={}, versions={}, auto_precision="bf16")
    manifest.variants = {"openvino-bf16": {"precision": "bf16", "status": "rejected"}}
    assert "no bf16 variant was accepted" in api.auto_note(manifest)
    manifest.variants["openvino-bf16"]["status"] = "accepted"
    assert api.auto_note(manifest).startswith("--backend auto serves bf16 (openvino-bf16)")
    assert api.auto_note(Manifest(run="r", sources={}, export_config={}, versions={})) == ""


def test_an_invalid_set_name_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="invalid prediction set"):
        RunOptions(dates=DAY, predictions="../x")
    with pytest.raises(UsageError, match="invalid prediction set"):
        RunOptions(dates=DAY, predictions="a.csv")

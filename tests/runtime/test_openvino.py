"""The OpenVINO backends on a tiny exported run: fp32 and bf16 against torch, tthf-run, auto, unavailability, staleness."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tthf.cli.run import main as run_main
from tthf.engine import runs
from tthf.engine.artifacts import Manifest
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import ModelIO
from tthf.engine.model.network import ThreeHeadedTransformer, save_checkpoint
from tthf.engine.runtime.backends import OpenVinoBackend, OpenVinoBf16Backend, open_backend
from tthf.engine.runtime.backends import openvino as ov_backend
from tthf.engine.testing import DAYS, make_data, make_run
from tthf.errors import BackendUnavailableError, StaleArtifactError, ValidationError
from tthf.export.api import Artifacts, reference_outputs, validate_artifacts
from tthf.export.config import ExportConfig
from tthf.export.inputs import heldout_windows
from tthf.export.validate import bars, compare, enforce

openvino = pytest.importorskip("openvino")

BF16_REASON = ov_backend.bf16_unavailable_reason(openvino.Core())
needs_bf16 = pytest.mark.skipif(BF16_REASON is not None, reason=f"bf16 cannot be validated here: {BF16_REASON}")
#: backend name -> the tolerance table it is validated at
BARS = {"openvino": "fp32", "openvino-bf16": "bf16"}


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, runs.Run]:
    from tthf.export.api import export_run

    torch.set_num_threads(2)
    base = tmp_path_factory.mktemp("openvino")
    run = make_run(str(base / "store"), make_data(base / "data"))
    export_run(run, ExportConfig(real_windows=256, random_batches=(3,)))
    return base, run


def _copy(base: Path, run: runs.Run, tmp_path: Path) -> runs.Run:
    """A private copy of the exported run that a test may change (its data root stays the shared one)."""
    shutil.copytree(base / "store", tmp_path / "store")
    return runs.Run.open(runs.find_run(str(tmp_path / "store"), run.ref.run_id))


def _inputs(run: runs.Run) -> dict[str, np.ndarray]:
    """Random N(0, 1) windows and real held-out ones, each more than a few sub-batches long."""
    n = 3 * ov_backend.SUB_BATCH + 7
    random = ModelIO.of(run.config.model).dummy_inputs([n], seed=11)[0]
    return {random.name: random.x, "heldout@700": heldout_windows(run, 700, seed=5)}


def _check(run: runs.Run, name: str, reference: dict[str, np.ndarray], got: dict[str, np.ndarray], inputs: str) -> None:
    bar = BARS[name]
    enforce(
        compare(
            reference,
            got,
            artifact="model.onnx",
            backend=name,
            inputs=inputs,
            precision=bar,
            tolerance=bars(bar, run.config.model),
        )
    )


@pytest.mark.parametrize("name", ["openvino", pytest.param("openvino-bf16", marks=needs_bf16)])
def test_matches_torch_on_random_and_heldout_windows(exported_run: tuple[Path, runs.Run], name: str) -> None:
    _, run = exported_run
    backend = open_backend(run, name, threads=2)
    reference = open_backend(run, "torch")
    assert backend.name == name and backend.precision == ("bf16" if name.endswith("bf16") else "fp32")
    for inputs, x in _inputs(run).items():
        got = backend.predict(x)
        assert all(got[k].shape == (len(x),) and got[k].dtype == np.float32 for k in OUTPUT_NAMES)
        _check(run, name, reference.predict(x), got, inputs)


def test_a_wrong_output_fails_validation(exported_run: tuple[Path, runs.Run]) -> None:
    """The test of the test: 5% off on one output is far outside the fp32 and fp16 bars."""
    _, run = exported_run
    x = heldout_windows(run, 200, seed=2)
    reference = open_backend(run, "torch").predict(x)
    got = open_backend(run, "openvino").predict(x)
    _check(run, "openvino", reference, got, "heldout@200")  # passes as it is
    for name in OUTPUT_NAMES:
        wrong = {**got, name: got[name] * np.float32(1.05)}
        for backend in BARS:
            with pytest.raises(ValidationError, match=name):
                _check(run, backend, reference, wrong, "heldout@200")


def test_sub_batches_over_streams_reassemble_in_order(exported_run: tuple[Path, runs.Run]) -> None:
    """Uneven sub-batches over two streams' requests land where they belong (equal to one call)."""
    _, run = exported_run
    x = _inputs(run)["heldout@700"]
    split = OpenVinoBackend.from_run(run, threads=2, sub_batch=50)
    one = OpenVinoBackend.from_run(run, threads=1, sub_batch=len(x))
    assert (split.streams, one.streams) == (2, 1) and "2 stream(s)" in split.detail
    assert split.queue is not None and one.queue is None
    ref = one.predict(x)
    for batch in (x, x[:51], x[:99], x[:1]):
        got = split.predict(batch)
        _check(run, "openvino", {k: v[: len(batch)] for k, v in ref.items()}, got, f"heldout@{len(batch)}")


def test_export_records_openvino_validation(exported_run: tuple[Path, runs.Run]) -> None:
    _, run = exported_run
    manifest = Manifest.read(run)
    rows = [r for r in manifest.validation if r["backend"] == "openvino"]
    assert rows and all(r["precision"] == "fp32" and r["violations"] == 0 for r in rows)
    assert {r["inputs"].split("@")[0] for r in rows} == {"random", "heldout"}
    bf16 = [r for r in manifest.validation if r["backend"] == "openvino-bf16"]
    variant = manifest.variants["openvino-bf16"]
    if BF16_REASON is None:
        assert bf16 and all(r["precision"] == "bf16" and r["q_bar"] > 0 for r in bf16)
        assert variant["status"] == ("accepted" if all(r["passed"] for r in bf16) else "rejected")
    else:
        assert not bf16
        assert variant["status"] == "unavailable" and "no native bf16" in variant["reason"]
    assert manifest.versions["openvino"] == openvino.__version__


def test_export_without_openvino_notes_it(exported_run: tuple[Path, runs.Run], monkeypatch: pytest.MonkeyPatch) -> None:
    _, run = exported_run
    built = Artifacts()
    for name in (runs.FP32_ONNX, runs.FP16_ONNX):
        built.add(name, run.read_bytes(runs.export_key(name)))
    sets = ModelIO.of(run.config.model).dummy_inputs([5], seed=1)
    reference = reference_outputs(run, sets)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    results, notes = validate_artifacts(run, built, sets, reference)
    assert {r.backend for r in results} == {"onnxruntime"}
    assert len(notes) == 1 and "not validated through openvino: openvino is not installed" in notes[0]


@pytest.mark.parametrize("name", ["openvino", pytest.param("openvino-bf16", marks=needs_bf16)])
def test_tthf_run_agrees_with_torch(exported_run: tuple[Path, runs.Run], tmp_path: Path, name: str) -> None:
    base, run = exported_run
    copy = _copy(base, run, tmp_path)
    day = DAYS[-1].isoformat()
    inference = tmp_path / "store" / runs.DEFAULT_EXPERIMENT / runs.DEFAULT_MODEL_TYPE / run.ref.run_id / "inference"
    frames = {}
    for backend in ("torch", name):
        out = inference / backend  # each its own prediction set: a set never mixes precisions
        argv = [
            "--run",
            "jen",
            "--store",
            str(tmp_path / "store"),
            "--dates",
            day,
            "--dense",
            "--backend",
            backend,
            "--format",
            "parquet",
            "--predictions",
            backend,
        ]
        assert run_main(argv) == 0
        frames[backend] = pl.read_parquet(out / f"{day}.parquet")
        assert json.loads((out / "manifest.json").read_text())["settings"]["backend"] == backend
    ref, got = frames["torch"], frames[name]
    assert ref.height == got.height > 0 and ref["ts"].equals(got["ts"]) and ref["symbol"].equals(got["symbol"])
    _check(
        copy,
        name,
        {k: ref[k].to_numpy() for k in OUTPUT_NAMES},
        {k: got[k].to_numpy() for k in OUTPUT_NAMES},
        f"tthf-run {day}",
    )


def test_tthf_run_bf16_not_validated_exits_5(
    exported_run: tuple[Path, runs.Run], capsys: pytest.CaptureFixture
) -> None:
    """Exported on a CPU without native bf16, the variant was never validated: serving it is refused."""
    if BF16_REASON is None:
        pytest.skip("this CPU has native bf16: test_tthf_run_agrees_with_torch runs openvino-bf16")
    base, _ = exported_run
    argv = [
        "--run",
        "jen",
        "--store",
        str(base / "store"),
        "--dates",
        DAYS[-1].isoformat(),
        "--backend",
        "openvino-bf16",
    ]
    assert run_main(argv) == 5
    err = capsys.readouterr().err
    assert "does not serve openvino-bf16: it could not be validated on the export host" in err
    assert "no native bf16" in err


def test_auto_prefers_openvino_on_a_cpu_host(
    exported_run: tuple[Path, runs.Run], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tthf.engine.runtime.backends.tensorrt import unavailable_reason

    if unavailable_reason() is None or torch.cuda.is_available():
        pytest.skip("a GPU host: auto prefers TensorRT / ONNX Runtime on the GPU")
    _, run = exported_run
    with caplog.at_level(logging.INFO, logger="tthf"):
        backend = open_backend(run, "auto")
    assert backend.name == "openvino" and "backend auto: using openvino" in caplog.text
    monkeypatch.setitem(sys.modules, "openvino", None)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tthf"):
        assert open_backend(run, "auto").name == "onnxruntime"
    assert "openvino: openvino is not installed" in caplog.text


def test_unavailable_without_openvino(exported_run: tuple[Path, runs.Run], monkeypatch: pytest.MonkeyPatch) -> None:
    _, run = exported_run
    monkeypatch.setitem(sys.modules, "openvino", None)
    for name in BARS:
        with pytest.raises(BackendUnavailableError, match=r"openvino is not installed; pip install 'tthf\[cpu\]'"):
            open_backend(run, name)


class _Core:
    """What ``bf16_unavailable_reason`` reads from ``openvino.Core``."""

    def __init__(self, capabilities: list[str]) -> None:
        self.capabilities = capabilities

    def get_property(self, device: str, key: str) -> object:
        return {"OPTIMIZATION_CAPABILITIES": self.capabilities, "FULL_DEVICE_NAME": "Test CPU"}[key]


def test_bf16_needs_native_support() -> None:
    assert ov_backend.bf16_unavailable_reason(_Core(["FP32", "BF16", "INT8"])) is None
    reason = ov_backend.bf16_unavailable_reason(_Core(["FP32", "INT8"]))
    assert reason is not None and "Test CPU" in reason and "AVX-512 BF16 or AMX" in reason
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    native = {"avx512_bf16", "amx_bf16"} & set(flags.split(":")[-1].split())
    assert (BF16_REASON is None) == bool(native)  # OpenVINO's view agrees with the kernel's flags


def test_bf16_silent_fallback_is_refused(exported_run: tuple[Path, runs.Run], monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the capability check, a model OpenVINO compiled at f32 still does not serve as bf16."""
    if BF16_REASON is None:
        pytest.skip("this CPU compiles bf16 for real")
    _, run = exported_run
    monkeypatch.setattr(ov_backend, "bf16_unavailable_reason", lambda core: None)
    with pytest.raises(BackendUnavailableError, match="compiled the model at f32, not bf16"):
        OpenVinoBf16Backend.from_onnx(run.read_bytes(runs.export_key(runs.FP32_ONNX)))


def test_stale_export_is_refused(exported_run: tuple[Path, runs.Run], tmp_path: Path) -> None:
    base, run = exported_run
    copy = _copy(base, run, tmp_path)
    torch.manual_seed(99)
    copy.write_bytes(runs.CHECKPOINT, save_checkpoint(ThreeHeadedTransformer(copy.config.model)))
    for name in BARS:
        with pytest.raises(StaleArtifactError, match=r"checkpoint.safetensors changed.*tthf-export --run jennifer"):
            open_backend(copy, name)

"""The fp16 TensorRT engine on a real GPU: build, load, validation at fp16 tolerance, staleness.

Runs only where ``tensorrt`` imports and PyTorch sees a CUDA device; skipped with the
reason otherwise (CI, CPU hosts). Nothing here is simulated: the engine is built by
TensorRT from the exported fp16 ONNX of a tiny real run.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tthf.engine import runs
from tthf.engine.artifacts import Manifest
from tthf.engine.model.network import ThreeHeadedTransformer, save_checkpoint
from tthf.engine.runtime.backends import TensorRTBackend, open_backend
from tthf.engine.runtime.backends.tensorrt import TensorRTEngine, current_target, unavailable_reason
from tthf.engine.testing import make_data, make_run
from tthf.errors import StaleArtifactError
from tthf.export.api import export_run, rebuild_engine
from tthf.export.config import ExportConfig
from tthf.export.inputs import heldout_windows
from tthf.export.validate import compare, enforce, tolerances

REASON = unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"needs CUDA + TensorRT: {REASON}")]
CFG = ExportConfig(
    opt_batches=(64, 512), max_batch=1024, real_windows=512, random_batches=(1, 37, 1024), require_engine=True
)


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, runs.Run]:
    base = tmp_path_factory.mktemp("gpu")
    data = make_data(base / "data")
    run = make_run(str(base / "store"), data, d_model=32)
    export_run(run, CFG)
    return base, run


def _copy(base: Path, run: runs.Run, tmp_path: Path) -> runs.Run:
    shutil.copytree(base / "store", tmp_path / "store")
    return runs.Run.open(runs.find_run(str(tmp_path / "store"), run.ref.run_id))


def test_engine_built_named_by_gpu_and_validated(gpu_run: tuple[Path, runs.Run]) -> None:
    _, run = gpu_run
    target = current_target()
    manifest = Manifest.read(run)
    name = target.engine_filename()
    assert manifest.engine["built"] is True and manifest.engine["file"] == name
    assert name.startswith(f"model_fp16.{target.sm}.trt{target.tensorrt_version}")
    assert run.exists(f"export/{target.timing_cache_filename()}")
    engine_checks = [v for v in manifest.validation if v["backend"] == "tensorrt"]
    assert engine_checks and all(v["passed"] and v["precision"] == "fp16" for v in engine_checks)
    assert {v["inputs"].split("@")[0] for v in engine_checks} == {"random", "heldout"}
    assert manifest.artifacts[name]["compute_capability"] == target.compute_capability


def test_backend_matches_torch_at_fp16_tolerance_on_all_profiles(gpu_run: tuple[Path, runs.Run]) -> None:
    _, run = gpu_run
    backend = open_backend(run, "tensorrt")
    assert isinstance(backend, TensorRTBackend) and len(backend.compiled.profiles) == 2
    x = heldout_windows(run, 512, seed=3)
    reference = open_backend(run, "torch")
    for n in (1, 64, 300, 512, 1500):  # 1500 > max_batch: split into two engine calls
        batch = x[np.arange(n) % len(x)]
        enforce(
            compare(
                reference.predict(batch),
                backend.predict(batch),
                artifact="engine",
                backend="tensorrt",
                inputs=f"heldout@{n}",
                precision="fp16",
                tolerance=tolerances("fp16", run.config.model),
            )
        )


def test_timing_cache_is_reused(
    gpu_run: tuple[Path, runs.Run], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base, run = gpu_run
    copy = _copy(base, run, tmp_path)
    with caplog.at_level(logging.INFO, logger="tthf.export"):
        export_run(copy, CFG)
    assert "timing cache reused" in caplog.text


def test_engine_for_another_gpu_is_rebuilt_or_refused(gpu_run: tuple[Path, runs.Run], tmp_path: Path) -> None:
    base, run = gpu_run
    copy = _copy(base, run, tmp_path)
    name = current_target().engine_filename()
    foreign = name.replace(".engine", ".other.engine")
    manifest = Manifest.read(copy)
    manifest.artifacts[foreign] = manifest.artifacts.pop(name)  # as if exported on another GPU/TRT version
    manifest.write(copy)
    copy.store.delete(f"export/{name}")
    with pytest.raises(StaleArtifactError, match="no TensorRT engine for .*--require-engine"):
        open_backend(copy, "tensorrt")
    backend = open_backend(copy, "tensorrt", rebuild=rebuild_engine)  # rebuilds, validates and records it
    assert name in Manifest.read(copy).artifacts and copy.exists(f"export/{name}")
    assert backend.predict(heldout_windows(copy, 8))["ret_1h"].shape == (8,)


def test_corrupt_engine_and_stale_checkpoint_are_refused(gpu_run: tuple[Path, runs.Run], tmp_path: Path) -> None:
    base, run = gpu_run
    with pytest.raises(StaleArtifactError, match="cannot load this engine"):
        TensorRTEngine(b"not an engine" * 100, source="x.engine")
    copy = _copy(base, run, tmp_path)
    torch.manual_seed(123)
    copy.write_bytes(runs.CHECKPOINT, save_checkpoint(ThreeHeadedTransformer(copy.config.model)))
    with pytest.raises(StaleArtifactError, match="checkpoint.safetensors changed"):
        open_backend(copy, "tensorrt")

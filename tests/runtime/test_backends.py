"""Inference backends on a tiny real run: torch vs onnxruntime on held-out windows, auto, staleness, and a
backend added by one spec line."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tthf.engine import runs
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import ModelIO, empty_outputs
from tthf.engine.model.network import ThreeHeadedTransformer, save_checkpoint
from tthf.engine.runtime.backends import REGISTRY, OnnxRuntimeBackend, TorchBackend, auto_order, open_backend
from tthf.engine.runtime.backends.base import (
    AutoRank,
    Backend,
    BackendSpec,
    Needs,
    exported_onnx,
    split_batch,
    write_outputs,
)
from tthf.engine.runtime.backends.onnxruntime import MAX_SUB_BATCH, MIN_SHARD
from tthf.engine.testing import ScaledStandIn, make_data, make_run
from tthf.errors import BackendUnavailableError, StaleArtifactError, UsageError
from tthf.export.api import Artifacts, export_run, reference_outputs, validate_artifacts
from tthf.export.config import ExportConfig
from tthf.export.inputs import heldout_windows
from tthf.export.validate import compare, enforce, failures, tolerances


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, runs.Run]:
    torch.set_num_threads(2)
    base = tmp_path_factory.mktemp("backends")
    data = make_data(base / "data")
    store = str(base / "store")
    run = make_run(store, data)
    export_run(run, ExportConfig(real_windows=256, random_batches=(3,)))
    return base, run


def _copy(base: Path, run: runs.Run, tmp_path: Path) -> runs.Run:
    """A private copy of the exported run that a test may damage."""
    shutil.copytree(base / "store", tmp_path / "store")
    return runs.Run.open(runs.find_run(str(tmp_path / "store"), run.ref.run_id))


@pytest.mark.slow
def test_onnxruntime_matches_torch_on_heldout_windows(exported_run: tuple[Path, runs.Run]) -> None:
    _, run = exported_run
    x = heldout_windows(run, 700, seed=5)
    assert x.shape == (700, run.config.model.seq_len, len(run.config.feature_names)) and x.dtype == np.float32
    ref = open_backend(run, "torch").predict(x)
    got = open_backend(run, "onnxruntime", threads=2).predict(x)
    assert set(got) == set(ref) == set(OUTPUT_NAMES)
    assert all(v.shape == (700,) and v.dtype == np.float32 for v in got.values())
    results = compare(
        ref,
        got,
        artifact="model.onnx",
        backend="onnxruntime",
        inputs="heldout@700",
        precision="fp32",
        tolerance=tolerances("fp32", run.config.model),
    )
    enforce(results)
    assert ref["vol_10m"].min() > 0 and ref["ret_conf"].min() >= 0 and ref["ret_conf"].max() <= 1


@given(
    n=st.integers(1, 5000),
    shards=st.integers(1, 8),
    sub_batch=st.integers(1, 600),
    min_shard=st.integers(1, 200),
)
def test_split_batch_covers_every_window_once_in_order(n: int, shards: int, sub_batch: int, min_shard: int) -> None:
    """The split both CPU backends use: contiguous, in order, no window twice or missing, within every bound."""
    plan = split_batch(n, shards, sub_batch, min_shard)
    parts = [part for shard in plan for part in shard]
    assert [i for part in parts for i in range(part.start, part.stop)] == list(range(n))
    assert all(0 < part.stop - part.start <= sub_batch for part in parts)
    assert 1 <= len(plan) <= shards and all(plan)
    sizes = [shard[-1].stop - shard[0].start for shard in plan]
    assert len(plan) == 1 or min(sizes) >= min_shard  # split only as far as every shard gets min_shard
    assert max(sizes) - min(sizes) <= 1  # balanced
    assert len(plan) == min(shards, max(1, n // min_shard))  # and as far as that allows


def test_write_outputs_puts_each_part_where_it_came_from() -> None:
    out = empty_outputs(10)
    for part in split_batch(10, 2, 3):
        for at in part:
            write_outputs(out, at, {k: np.arange(at.start, at.stop, dtype=np.float32) for k in OUTPUT_NAMES})
    assert all(np.array_equal(out[k], np.arange(10, dtype=np.float32)) for k in OUTPUT_NAMES)


def test_cpu_data_parallel_split_matches_one_session(exported_run: tuple[Path, runs.Run]) -> None:
    """Shards (uneven, over 3 sessions) and sub-batches (> MAX_SUB_BATCH) reassemble in order."""
    _, run = exported_run
    n = 3 * MAX_SUB_BATCH + 7
    x = np.random.default_rng(3).standard_normal(
        (n, run.config.model.seq_len, len(run.config.feature_names)), dtype=np.float32
    )
    one = OnnxRuntimeBackend.from_run(run, threads=1, providers=["CPUExecutionProvider"], sub_batch=n)  # one call
    split = OnnxRuntimeBackend.from_run(run, threads=3, providers=["CPUExecutionProvider"])
    assert len(one.sessions) == 1 and len(split.sessions) == 3 and "3 session(s) x 1 thread(s)" in split.detail
    ref = one.predict(x)
    for batch in (x, x[: 2 * MIN_SHARD - 1], x[: 2 * MIN_SHARD + 1]):
        got = split.predict(batch)
        assert all(got[k].shape == (len(batch),) and got[k].dtype == np.float32 for k in OUTPUT_NAMES)
        enforce(
            compare(
                {k: v[: len(batch)] for k, v in ref.items()},
                got,
                artifact="model.onnx",
                backend="onnxruntime-dp",
                inputs=f"random@{len(batch)}",
                precision="fp32",
                tolerance=tolerances("fp32", run.config.model),
            )
        )


@pytest.mark.slow
def test_auto_picks_the_fastest_available_and_says_which(
    exported_run: tuple[Path, runs.Run], caplog: pytest.LogCaptureFixture
) -> None:
    from tthf.engine.runtime.backends.tensorrt import unavailable_reason

    _, run = exported_run
    with caplog.at_level(logging.INFO, logger="tthf"):
        backend = open_backend(run, "auto")
    cpu_choice = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"  # docs/export.md
    expected = "tensorrt" if unavailable_reason() is None else cpu_choice
    assert backend.name == expected
    assert f"backend auto: using {expected}" in caplog.text
    if expected == "onnxruntime":
        assert isinstance(backend, OnnxRuntimeBackend)
    if expected != "tensorrt":
        assert "tensorrt:" in caplog.text  # the skip reason


def test_tensorrt_backend_unavailable_says_why(exported_run: tuple[Path, runs.Run]) -> None:
    from tthf.engine.runtime.backends.tensorrt import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present (tests/export/test_gpu_engine.py covers this backend)")
    _, run = exported_run
    with pytest.raises(BackendUnavailableError, match="TensorRT cannot run here"):
        open_backend(run, "tensorrt")


@pytest.mark.slow
def test_stale_export_is_refused_after_retraining(exported_run: tuple[Path, runs.Run], tmp_path: Path) -> None:
    base, run = exported_run
    copy = _copy(base, run, tmp_path)
    torch.manual_seed(99)
    copy.write_bytes(runs.CHECKPOINT, save_checkpoint(ThreeHeadedTransformer(copy.config.model)))
    for name in ("onnxruntime", "auto"):
        with pytest.raises(StaleArtifactError, match=r"checkpoint.safetensors changed.*tthf-export --run jennifer"):
            open_backend(copy, name)
    assert isinstance(open_backend(copy, "torch"), TorchBackend)  # the reference needs no export


def test_modified_artifact_is_refused(exported_run: tuple[Path, runs.Run], tmp_path: Path) -> None:
    base, run = exported_run
    copy = _copy(base, run, tmp_path)
    data = bytearray(copy.read_bytes("export/model.onnx"))
    data[-1] ^= 0xFF
    copy.write_bytes("export/model.onnx", bytes(data))
    with pytest.raises(StaleArtifactError, match="does not match the sha256"):
        open_backend(copy, "onnxruntime")


def test_without_export(exported_run: tuple[Path, runs.Run], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base, run = exported_run
    copy = _copy(base, run, tmp_path)
    for key in copy.store.list("export"):
        copy.store.delete(key)
    with pytest.raises(StaleArtifactError, match="export it first: tthf-export --run jennifer"):
        open_backend(copy, "onnxruntime")
    with caplog.at_level(logging.INFO, logger="tthf"):
        assert open_backend(copy, "auto").name == "torch"
    assert "has no export" in caplog.text
    with pytest.raises(UsageError, match="unknown backend"):
        open_backend(copy, "tflite")


def test_torch_reference_is_batch_invariant() -> None:
    """A window's outputs do not depend on the batch it came in (real time's few rows = batch's many),
    also on CPUs whose vector kernels finish odd lengths with a scalar loop (AVX-512)."""
    from tthf.engine.config import ModelConfig
    from tthf.engine.runtime.backends.torch import ROW_MULTIPLE

    torch.manual_seed(0)
    backend = TorchBackend(ThreeHeadedTransformer(ModelConfig(n_features=7, d_model=16, n_heads=2, n_layers=1)))
    x = np.random.default_rng(0).standard_normal((300, 30, 7), dtype=np.float32)
    whole = backend.predict(x)
    for lo, n in ((0, 1), (3, 4), (5, 37), (1, ROW_MULTIPLE), (7, 293)):
        part = backend.predict(x[lo : lo + n])
        for name in OUTPUT_NAMES:
            assert part[name].shape == (n,)
            assert np.array_equal(part[name], whole[name][lo : lo + n]), (name, lo, n)


class _PlugIn(ScaledStandIn):
    """A backend added by one spec line; it keeps what it was opened with."""

    opened_with: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def from_run(cls, run: runs.Run, **options: Any) -> Backend:
        cls.opened_with.append(options)
        return cls(exported_onnx(run))


class _OffPlugIn(_PlugIn):
    scale = 1.05


def _plug_in(cls: type[Backend]) -> BackendSpec:
    """The spec, declared as a backend's file declares it: tried first by auto on the CPU, last on a CUDA host."""
    return BackendSpec(
        "plug-in",
        cls,
        precision="fp32",
        device="cpu",
        needs=Needs(("onnxruntime",), runs.FP32_ONNX),
        auto_rank=AutoRank(cpu=-1, cuda=9),
        options=("threads",),
    )


PLUG_IN = _PlugIn.spec = _plug_in(_PlugIn)
OFF_PLUG_IN = _OffPlugIn.spec = _plug_in(_OffPlugIn)


def test_a_backend_registered_by_its_spec_is_opened_ranked_by_auto_and_validated_by_export(
    exported_run: tuple[Path, runs.Run], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, run = exported_run
    assert "plug-in" not in REGISTRY and "plug-in" not in [s.name for s in auto_order(False)]
    monkeypatch.setitem(REGISTRY, PLUG_IN.name, PLUG_IN)  # the one line in backends/__init__.py
    _PlugIn.opened_with.clear()

    opened = open_backend(run, "plug-in", threads=3, rebuild=lambda run, manifest: "engine")
    assert isinstance(opened, _PlugIn) and opened.name == "plug-in" and opened.precision == "fp32"
    assert _PlugIn.opened_with == [{"threads": 3}]  # the option its spec takes, not rebuild
    assert auto_order(False)[0] == PLUG_IN and auto_order(True)[-1] == PLUG_IN  # placed by its rank
    with caplog.at_level(logging.INFO, logger="tthf"):
        assert open_backend(run, "auto").name == "plug-in"
    assert "backend auto: using plug-in (stand-in, outputs x 1.0)" in caplog.text

    built = Artifacts()
    for name in (runs.FP32_ONNX, runs.FP16_ONNX):
        built.add(name, run.read_bytes(runs.export_key(name)))
    sets = ModelIO.of(run.config.model).dummy_inputs([5], seed=1)
    reference = reference_outputs(run, sets)
    results, _ = validate_artifacts(run, built, sets, reference)
    checked = {(r.backend, r.artifact, r.precision) for r in results if r.backend == "plug-in"}
    assert checked == {("plug-in", runs.FP32_ONNX, "fp32")} and failures(results) == ""
    monkeypatch.setitem(REGISTRY, OFF_PLUG_IN.name, OFF_PLUG_IN)
    results, _ = validate_artifacts(run, built, sets, reference)
    assert "plug-in" in failures(results)  # a served backend's miss fails the export

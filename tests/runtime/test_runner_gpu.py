"""Window runners: host buffers on CPU; the pinned ring, streams and engines on CUDA.

The CUDA tests run the real pinned-memory ring (torch pinned tensors, copy / compute
streams, events) with every engine on an exported run, compared with the CPU fp32
reference at the documented tolerances (``tthf.engine.model.interface.tolerances``:
fp16 for TensorRT and torch-cuda, fp32 for ONNX Runtime, whose TF32 is off), and skip
with the reason where there is no CUDA. The CPU tests check the comparison itself: an
output scaled by 1.05 must fail it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tthf.engine import runs, windows
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data.marketdata import read_day
from tthf.engine.features import build_day
from tthf.engine.runtime.backends import TorchBackend, open_backend
from tthf.engine.runtime.runner import CudaRunner, HostRunner, make_runner
from tthf.engine.testing import DAYS, make_data, make_run
from tthf.errors import BackendUnavailableError, ValidationError
from tthf.export.validate import compare, enforce, tolerances

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available on this host (torch.cuda.is_available() is False)"
)
#: the precision each GPU backend is validated at
PRECISION = {"torch-cuda": "fp16", "tensorrt": "fp16", "onnxruntime": "fp32"}


def _day(base: Path, n_symbols: int = 5) -> tuple[runs.Run, Any, np.ndarray]:
    data = make_data(base / "data", n_symbols=n_symbols)
    run = make_run(str(base / "runs"), data)
    feats = build_day(read_day(str(data), DAYS[1]), DAYS[1])
    return run, feats, run.load_scalers().transform_day(feats, run.config.feature_names)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory):
    return _day(tmp_path_factory.mktemp("runner"))


@pytest.fixture(scope="module")
def exported_day(tmp_path_factory: pytest.TempPathFactory):
    """The day of an exported run (fp32 and fp16 ONNX, and the TensorRT engine where TensorRT runs)."""
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig

    run, feats, scaled = _day(tmp_path_factory.mktemp("gpu"), n_symbols=12)
    export_run(run, ExportConfig(opt_batches=(64, 512), max_batch=4097 * 2, real_windows=256, random_batches=(3,)))
    return run, feats, scaled


def _naive(feats, scaled: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sym, minute = windows.window_positions(feats.mask, 30, stride)
    x = np.stack([scaled[s, t - 29 : t + 1] for s, t in zip(sym, minute)])
    return x, sym, minute


def _reference(run: runs.Run, x: np.ndarray) -> dict[str, np.ndarray]:
    """The CPU fp32 reference, whatever device the host has."""
    return TorchBackend(run.load_model(), device="cpu").predict(x)


def _assert_close(
    run: runs.Run, got: dict[str, np.ndarray], want: dict[str, np.ndarray], precision: str, what: str
) -> None:
    enforce(
        compare(
            want,
            got,
            artifact=what,
            backend=what,
            inputs="day",
            precision=precision,
            tolerance=tolerances(precision, run.config.model),
        )
    )


def _gpu_backend(run: runs.Run, name: str):
    """The backend on the GPU, or skip with why; an ONNX Runtime that silently runs on the CPU is a failure."""
    try:
        backend = open_backend(run, name)
    except BackendUnavailableError as exc:
        pytest.skip(f"{name} unavailable: {exc}")
    if name == "onnxruntime" and not backend.on_gpu:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.fail(
                f"onnxruntime-gpu is installed but the session runs on {backend.detail}: "
                "its CUDA libraries do not load (run tthf-doctor)"
            )
        pytest.skip("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
    return backend


@pytest.mark.parametrize("stride", [1, 7])
def test_host_runner_equals_the_backend_on_naively_cut_windows(day, stride: int) -> None:
    run, feats, scaled = day
    backend = open_backend(run, "torch")
    runner = make_runner(backend, capacity=100, seq_len=30, n_features=scaled.shape[2])
    assert isinstance(runner, HostRunner)  # the reference runs on the CPU, on every host
    got = runner.run(scaled, feats.mask, stride=stride)
    x, sym, minute = _naive(feats, scaled, stride)
    want = backend.predict(x)
    np.testing.assert_array_equal(got.sym, sym)
    np.testing.assert_array_equal(got.minute, minute)
    for name, value in want.items():
        np.testing.assert_allclose(got.outputs[name], value, rtol=1e-6, atol=1e-7)
    assert got.windowing == "host" and got.seconds["inference"] > 0


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("output", OUTPUT_NAMES)
def test_the_gpu_comparison_fails_an_output_scaled_by_1_05(day, precision: str, output: str) -> None:
    """A test of the GPU tests: the tolerance they use catches a 5% error in any output."""
    run, feats, scaled = day
    x, _, _ = _naive(feats, scaled, 1)
    want = _reference(run, x)
    _assert_close(run, {k: v.copy() for k, v in want.items()}, want, precision, "exact")  # identical passes
    wrong = {k: v * (1.05 if k == output else 1.0) for k, v in want.items()}
    with pytest.raises(ValidationError, match=output):
        _assert_close(run, wrong, want, precision, "scaled")


def test_an_unknown_windowing_is_refused_before_any_work() -> None:
    from tthf.engine.runtime.options import RunOptions
    from tthf.errors import UsageError

    with pytest.raises(UsageError, match="windowing"):
        RunOptions(dates="2024", windowing="gpu")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend_name", list(PRECISION))
@pytest.mark.parametrize("windowing", ["host", "device"])
@pytest.mark.parametrize("stride", [1, 7])
def test_cuda_ring_equals_the_cpu_reference(exported_day, backend_name: str, windowing: str, stride: int) -> None:
    run, feats, scaled = exported_day
    backend = _gpu_backend(run, backend_name)
    runner = make_runner(backend, capacity=64, seq_len=30, n_features=scaled.shape[2], windowing=windowing)
    assert isinstance(runner, CudaRunner)
    got = runner.run(scaled, feats.mask, stride=stride)
    assert got.windowing == windowing
    x, sym, minute = _naive(feats, scaled, stride)
    np.testing.assert_array_equal(got.sym, sym)
    np.testing.assert_array_equal(got.minute, minute)
    _assert_close(run, got.outputs, _reference(run, x), PRECISION[backend_name], f"{backend_name} ring")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend_name", list(PRECISION))
def test_every_batch_size_and_profile_matches_the_reference(exported_day, backend_name: str) -> None:
    """Batches 1, 37, 512, 1000, 4096, 4097 (past a profile's opt) through predict, each profile included."""
    run, feats, scaled = exported_day
    backend = _gpu_backend(run, backend_name)
    x, _, _ = _naive(feats, scaled, 1)
    pool = np.concatenate([x] * (1 + 4097 // len(x)))[:4097]
    for n in (1, 37, 512, 1000, 4096, 4097):
        _assert_close(
            run,
            backend.predict(pool[:n]),
            _reference(run, pool[:n]),
            PRECISION[backend_name],
            f"{backend_name} batch {n}",
        )


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend_name", list(PRECISION))
def test_outputs_do_not_depend_on_batch_position_or_size(exported_day, backend_name: str) -> None:
    """NVIDIA/TensorRT #4796, #4813, #3730: a row's output must not depend on the batch it sits in."""
    run, feats, scaled = exported_day
    backend = _gpu_backend(run, backend_name)
    x, _, _ = _naive(feats, scaled, 1)
    rows = x[:37]
    alone = backend.predict(rows)
    big = np.concatenate([x[37 : 37 + 400], rows, x[37 : 37 + 100]])
    inside = {k: v[400:437] for k, v in backend.predict(big).items()}
    one_by_one = {k: np.concatenate([backend.predict(rows[i : i + 1])[k] for i in range(len(rows))]) for k in alone}
    tol = PRECISION[backend_name]
    _assert_close(run, inside, alone, tol, f"{backend_name} position")
    _assert_close(run, one_by_one, alone, tol, f"{backend_name} size")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend_name", ["torch-cuda", "tensorrt", "onnxruntime"])  # ORT: on its session's stream
@pytest.mark.parametrize("slots", [2, 3])
def test_ring_stress_is_bitwise_one_batch_at_a_time(exported_day, backend_name: str, slots: int) -> None:
    """A small capacity and many batches: the overlapped ring gives the bits of a ring with one slot."""
    run, feats, scaled = exported_day
    backend = _gpu_backend(run, backend_name)
    engine = backend.device_engine()
    serial = CudaRunner(engine, capacity=7, seq_len=30, n_features=scaled.shape[2], windowing="host", slots=1)
    ring = CudaRunner(engine, capacity=7, seq_len=30, n_features=scaled.shape[2], windowing="host", slots=slots)
    for stride in (1, 3, 1):  # alternating batch layouts on one context
        want = serial.run(scaled, feats.mask, stride=stride)
        got = ring.run(scaled, feats.mask, stride=stride)
        for name in OUTPUT_NAMES:
            np.testing.assert_array_equal(got.outputs[name], want.outputs[name])


@pytest.mark.gpu
@needs_cuda
def test_device_and_host_windowing_feed_identical_windows(exported_day) -> None:
    run, feats, scaled = exported_day
    backend = _gpu_backend(run, "torch-cuda")
    outs = {}
    for mode in ("host", "device"):
        runner = make_runner(backend, capacity=50, seq_len=30, n_features=scaled.shape[2], windowing=mode)
        outs[mode] = runner.run(scaled, feats.mask, stride=3)
    for name in outs["host"].outputs:
        np.testing.assert_array_equal(outs["host"].outputs[name], outs["device"].outputs[name])
    np.testing.assert_array_equal(outs["host"].sym, outs["device"].sym)


@pytest.mark.gpu
@needs_cuda
def test_auto_windowing_uploads_the_grid_in_dense_mode(exported_day) -> None:
    run, feats, scaled = exported_day
    runner = make_runner(_gpu_backend(run, "torch-cuda"), capacity=64, seq_len=30, n_features=scaled.shape[2])
    total = windows.count_windows(feats.mask, 30, 1)
    assert runner.choose_windowing(*feats.mask.shape, total) == "device"
    assert runner.choose_windowing(*feats.mask.shape, total // 60) == "host"


@pytest.mark.gpu
@needs_cuda
def test_a_failed_batch_leaves_the_ring_reusable(exported_day) -> None:
    run, feats, scaled = exported_day
    backend = _gpu_backend(run, "torch-cuda")
    runner = make_runner(backend, capacity=16, seq_len=30, n_features=scaled.shape[2], windowing="host")
    assert isinstance(runner, CudaRunner)
    execute, calls = runner.engine.execute, []

    def flaky(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        execute(*args)

    runner.engine.execute = flaky
    with pytest.raises(RuntimeError, match="injected"):
        runner.run(scaled, feats.mask, stride=1)
    runner.engine.execute = execute
    assert all(slot.span is None for slot in runner.slots)
    x, _, _ = _naive(feats, scaled, 1)
    _assert_close(run, runner.run(scaled, feats.mask, stride=1).outputs, _reference(run, x), "fp16", "after failure")


@pytest.mark.gpu
@needs_cuda
def test_device_windowing_stages_the_grid_in_one_pinned_buffer(exported_day) -> None:
    """Audit 17: the grid goes up from pinned memory, the buffer is kept across days and grown for a larger one."""
    run, feats, scaled = exported_day
    backend = _gpu_backend(run, "torch-cuda")
    runner = make_runner(backend, capacity=50, seq_len=30, n_features=scaled.shape[2], windowing="device")
    host = make_runner(backend, capacity=50, seq_len=30, n_features=scaled.shape[2], windowing="host")
    small_scaled, small_mask = scaled[: len(scaled) // 2], feats.mask[: len(scaled) // 2]
    for day_scaled, day_mask in ((small_scaled, small_mask), (scaled, feats.mask), (small_scaled, small_mask)):
        got = runner.run(np.ascontiguousarray(day_scaled), np.ascontiguousarray(day_mask), stride=2)
        want = host.run(np.ascontiguousarray(day_scaled), np.ascontiguousarray(day_mask), stride=2)
        assert runner._grid_host.is_pinned() and runner._grid_host.numel() >= day_scaled.size
        for name in OUTPUT_NAMES:
            np.testing.assert_array_equal(got.outputs[name], want.outputs[name])
    assert runner._grid_host.numel() == scaled.size  # grown once, to the largest day

"""Window runners: host buffers on CPU; the pinned ring, streams and engines on CUDA.

The CUDA tests run the real pinned-memory ring (torch pinned tensors, copy / compute
streams, events) with each engine the host has and skip with the reason otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tthf.engine import windows
from tthf.engine.data.marketdata import read_day
from tthf.engine.features import build_day
from tthf.engine.runtime.backends import open_backend
from tthf.engine.runtime.runner import CudaRunner, HostRunner, make_runner
from tthf.engine.testing import DAYS, make_data, make_run
from tthf.errors import BackendUnavailableError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this host (torch.cuda.is_available() is False)")


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("gpu")
    data = make_data(base / "data", n_symbols=5)
    run = make_run(str(base / "runs"), data)
    feats = build_day(read_day(str(data), DAYS[1]), DAYS[1])
    scaled = run.load_scalers().transform_day(feats, run.config.feature_names)
    return run, feats, scaled


def _naive(feats, scaled: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sym, minute = windows.window_positions(feats.mask, 30, stride)
    x = np.stack([scaled[s, t - 29:t + 1] for s, t in zip(sym, minute)])
    return x, sym, minute


@pytest.mark.parametrize("stride", [1, 7])
def test_host_runner_equals_the_backend_on_naively_cut_windows(day, stride: int) -> None:
    run, feats, scaled = day
    backend = open_backend(run, "torch")
    runner = make_runner(backend, capacity=100, seq_len=30, n_features=scaled.shape[2])
    assert isinstance(runner, HostRunner)  # CPU backend
    got = runner.run(scaled, feats.mask, stride=stride)
    x, sym, minute = _naive(feats, scaled, stride)
    want = backend.predict(x)
    np.testing.assert_array_equal(got.sym, sym)
    np.testing.assert_array_equal(got.minute, minute)
    for name, value in want.items():
        np.testing.assert_allclose(got.outputs[name], value, rtol=1e-6, atol=1e-7)
    assert got.windowing == "host" and got.seconds["inference"] > 0




@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime", "tensorrt"])
@pytest.mark.parametrize("windowing", ["host", "device"])
def test_cuda_ring_equals_the_reference_in_both_windowing_modes(day, backend_name: str, windowing: str) -> None:
    run, feats, scaled = day
    if backend_name != "torch":
        from tthf.engine.runs import EXPORT_MANIFEST as MANIFEST

        if not run.exists(MANIFEST):
            pytest.skip(f"{backend_name} needs an exported run (tthf-export); this tiny run has none")
    try:
        backend = open_backend(run, backend_name)
    except BackendUnavailableError as exc:
        pytest.skip(f"{backend_name} unavailable: {exc}")
    runner = make_runner(backend, capacity=64, seq_len=30, n_features=scaled.shape[2], windowing=windowing)
    assert isinstance(runner, CudaRunner)
    got = runner.run(scaled, feats.mask, stride=1)
    assert got.windowing == windowing
    x, sym, minute = _naive(feats, scaled, 1)
    reference = open_backend(run, "torch").model.cpu()
    import torch

    with torch.inference_mode():
        want = [t.numpy() for t in reference(torch.from_numpy(x))]
    np.testing.assert_array_equal(got.sym, sym)
    np.testing.assert_array_equal(got.minute, minute)
    for k, name in enumerate(("ret_1h", "vol_10m", "ret_conf", "vol_conf")):
        np.testing.assert_allclose(got.outputs[name], want[k], rtol=2e-2, atol=2e-3)  # fp16 engines


@pytest.mark.gpu
@needs_cuda
def test_device_and_host_windowing_feed_identical_windows(day) -> None:
    run, feats, scaled = day
    backend = open_backend(run, "torch")
    outs = {}
    for mode in ("host", "device"):
        runner = make_runner(backend, capacity=50, seq_len=30, n_features=scaled.shape[2], windowing=mode)
        outs[mode] = runner.run(scaled, feats.mask, stride=3)
    for name in outs["host"].outputs:
        np.testing.assert_array_equal(outs["host"].outputs[name], outs["device"].outputs[name])
    np.testing.assert_array_equal(outs["host"].sym, outs["device"].sym)


@pytest.mark.gpu
@needs_cuda
def test_auto_windowing_uploads_the_grid_in_dense_mode(day) -> None:
    run, feats, scaled = day
    runner = make_runner(open_backend(run, "torch"), capacity=64, seq_len=30, n_features=scaled.shape[2])
    total = windows.count_windows(feats.mask, 30, 1)
    assert runner.choose_windowing(*feats.mask.shape, total) == "device"
    assert runner.choose_windowing(*feats.mask.shape, total // 60) == "host"


def test_an_unknown_windowing_is_refused_before_any_work() -> None:
    from tthf.engine.runtime.batch import RunOptions
    from tthf.errors import UsageError

    with pytest.raises(UsageError, match="windowing"):
        RunOptions(dates="2024", windowing="gpu")

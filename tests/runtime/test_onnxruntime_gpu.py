"""ONNX Runtime on the GPU: its session computes on one torch stream, without a host sync per run.

Findings 11 and 15 in docs/gpu-audit-status.md. The CPU tests check what can be checked without a GPU: the
provider options carry the stream (``user_compute_stream``, the option name in ONNX
Runtime's ``cuda_execution_provider_info.cc`` and ``tensorrt_execution_provider_info.cc``),
the session is created with them, runs use ``disable_synchronize_execution_providers``
(``onnxruntime_run_options_config_keys.h``), and the runner is handed that stream. They use a
stand-in ``InferenceSession`` that reports the CUDA provider, since this host has none. The
``gpu`` tests run the real session on a CUDA host.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import INPUT_NAME
from tthf.engine.runtime.backends import onnxruntime as ortb
from tthf.errors import BackendError, BackendUnavailableError, UsageError

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available on this host (torch.cuda.is_available() is False)"
)


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
def test_provider_options_carry_the_compute_stream(provider: str) -> None:
    with_stream = ortb.provider_options(provider, 1, "/cache", stream=140234)
    assert with_stream["user_compute_stream"] == "140234" and with_stream["device_id"] == "1"
    without = ortb.provider_options(provider, 1, "/cache")
    assert "user_compute_stream" not in without
    assert {k: v for k, v in with_stream.items() if k != "user_compute_stream"} == without


def test_the_cpu_provider_takes_no_stream_and_the_default_stream_is_refused() -> None:
    assert ortb.provider_options("CPUExecutionProvider", 0, "/cache", stream=140234) == {}
    with pytest.raises(UsageError, match="default CUDA stream"):
        ortb.provider_options("CUDAExecutionProvider", 0, "/cache", stream=0)


class _Stream:
    """Stands in for torch.cuda.Stream: only its handle is read on the host."""

    def __init__(self, handle: int) -> None:
        self.cuda_stream = handle
        self.synchronized = 0

    def synchronize(self) -> None:
        self.synchronized += 1


class _Binding:
    def __init__(self) -> None:
        self.inputs: dict[str, tuple[Any, ...]] = {}
        self.outputs: dict[str, tuple[Any, ...]] = {}

    def bind_input(self, name: str, *args: Any) -> None:
        self.inputs[name] = args

    def bind_output(self, name: str, *args: Any) -> None:
        self.outputs[name] = args


class _CudaSession:
    """An InferenceSession that got the CUDA provider (what a GPU host reports)."""

    created: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, model: bytes, options: Any, *, providers: list[str], provider_options: list[dict]) -> None:
        type(self).created.append(dict(zip(providers, provider_options)))
        self.runs: list[tuple[Any, Any]] = []
        self.bindings: list[_Binding] = []

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def io_binding(self) -> _Binding:
        self.bindings.append(_Binding())
        return self.bindings[-1]

    def run_with_iobinding(self, binding: _Binding, run_options: Any = None) -> None:
        self.runs.append((binding, run_options))


class _Tensor:
    def __init__(self, shape: tuple[int, ...], ptr: int) -> None:
        self.shape, self._ptr = shape, ptr

    def data_ptr(self) -> int:
        return self._ptr


@pytest.fixture
def cuda_backend(monkeypatch: pytest.MonkeyPatch) -> tuple[ortb.OnnxRuntimeBackend, _Stream]:
    stream = _Stream(140234)
    _CudaSession.created = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", _CudaSession)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: stream)
    return ortb.OnnxRuntimeBackend(b"model", providers=["CUDAExecutionProvider", "CPUExecutionProvider"]), stream


def test_the_gpu_session_is_created_on_the_backends_stream(cuda_backend) -> None:
    backend, stream = cuda_backend
    assert backend.on_gpu and backend.stream is stream
    (options,) = _CudaSession.created
    assert options["CUDAExecutionProvider"]["user_compute_stream"] == "140234"
    assert options["CUDAExecutionProvider"]["use_tf32"] == "0"


def test_the_runner_gets_the_sessions_stream_and_runs_do_not_sync(cuda_backend) -> None:
    backend, stream = cuda_backend
    engine = backend.device_engine()
    assert engine is not None and engine.stream is stream  # CudaRunner uses it as its compute stream
    x = _Tensor((64, 30, 59), 0x7000)
    outs = {name: _Tensor((64,), 0x8000 + i) for i, name in enumerate(OUTPUT_NAMES)}
    engine.execute(x, outs, 37, stream)
    engine.execute(x, outs, 64, stream)
    session = backend.session
    assert len(session.bindings) == 1  # one persistent binding, rebound per batch
    binding, run_options = session.runs[-1]
    assert binding is session.bindings[0]
    assert run_options.get_run_config_entry(ortb.NO_SYNC) == "1"
    assert binding.inputs[INPUT_NAME] == ("cuda", 0, np.float32, (64, 30, 59), 0x7000)
    assert binding.outputs[OUTPUT_NAMES[0]] == ("cuda", 0, np.float32, (64,), 0x8000)
    assert stream.synchronized == 0  # the host never waits inside the ring


def test_running_on_another_stream_is_refused(cuda_backend) -> None:
    backend, _ = cuda_backend
    engine = backend.device_engine()
    assert engine is not None
    with pytest.raises(BackendError, match="backend.stream"):
        engine.execute(_Tensor((4, 30, 59), 1), {}, 4, _Stream(99))


def test_a_gpu_session_without_cuda_torch_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu with a CPU torch: the GPU buffers cannot exist, so say so instead of failing later."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", _CudaSession)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="torch has no CUDA"):
        ortb.OnnxRuntimeBackend(b"model", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "user_compute_stream" not in _CudaSession.created[-1]["CUDAExecutionProvider"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One exported tiny run for the gpu tests of this module (exported only where CUDA is)."""
    from tthf.engine.testing import make_data, make_run
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig

    base = tmp_path_factory.mktemp("ort-gpu")
    run = make_run(str(base / "runs"), make_data(base / "data", n_symbols=4))
    if torch.cuda.is_available():
        export_run(run, ExportConfig(opt_batches=(64,), max_batch=512, real_windows=64, random_batches=(3,)))
    return run


def _real_gpu_backend(run: Any) -> tuple[Any, Any]:
    from tthf.engine.runtime.backends import open_backend

    backend = open_backend(run, "onnxruntime")
    if not backend.on_gpu:
        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.fail(f"onnxruntime-gpu is installed but the session runs on {backend.detail} (run tthf-doctor)")
        pytest.skip("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
    return run, backend


@pytest.mark.gpu
@needs_cuda
def test_gpu_predict_reuses_its_buffers_and_equals_a_fresh_session(exported) -> None:
    """After warm-up, 100 predicts allocate no device memory; the outputs equal a fresh backend's."""
    run, backend = _real_gpu_backend(exported)
    x = np.random.default_rng(0).standard_normal((300, run.config.model.seq_len, run.config.model.n_features))
    x = x.astype(np.float32)
    backend.predict(x)  # warm-up: buffers grown to 300 windows, ONNX Runtime's arena filled
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    for i in range(100):
        got = backend.predict(x[: 1 + (i * 37) % 300])
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before
    fresh = ortb.OnnxRuntimeBackend.from_run(run).predict(x[: len(got[OUTPUT_NAMES[0]])])
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], fresh[name], rtol=1e-6, atol=1e-7)


@pytest.mark.gpu
@needs_cuda
def test_the_ring_computes_on_the_sessions_stream(exported) -> None:
    from tthf.engine.runtime.runner import CudaRunner, make_runner

    run, backend = _real_gpu_backend(exported)
    runner = make_runner(backend, capacity=64, seq_len=run.config.model.seq_len, n_features=run.config.model.n_features)
    assert isinstance(runner, CudaRunner) and runner.compute_stream is backend.stream

"""Inference speed per backend and batch size, against the machine's measured matmul rate.

Backends (each skipped with the reason where it cannot run):

- ``torch-fp32``: tthf's torch backend, the eager PyTorch reference;
- ``torch-bf16``: the same model under CPU bf16 autocast (CPUs with avx512_bf16 / AMX);
- ``onnxruntime-fp32``: tthf's onnxruntime backend on the exported ``model.onnx`` (on CPU:
  one single-threaded session per core, the batch split between them);
- ``onnxruntime-fp32-intraop``: the same model in one session with one intra-op thread per
  core (the previous default, kept to show what the data-parallel split buys);
- ``openvino-fp32`` / ``openvino-bf16``: tthf's openvino backends on the same ``model.onnx``
  (bf16 only on CPUs with native bf16, recorded against the fp16 bar);
- ``onnxruntime-int8``: ``model.onnx`` with dynamically quantized int8 weights (a candidate
  faster CPU path, not a tthf backend: its accuracy is recorded against the fp16 bar);
- on CUDA hosts: ``torch-cuda-fp32``, ``torch-cuda-autocast`` (fp16) and ``tensorrt-fp16``.

Batches: 1, 64, the symbol count (one minute of the whole universe) and the dense
runner's 4096, of real scaled windows. ``test_matmul_rate`` measures torch's fp32 and
bf16 matrix-multiply rate on the same threads; report.py divides the model's FLOPs per
window (counted by torch's FlopCounterMode) times windows per second by it: the roofline
fraction. Every backend's outputs are compared with the fp32 reference first.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from benchlib import cpu_has_bf16, day_windows

from tthf.engine.config import DENSE_BATCH, OUTPUT_NAMES
from tthf.engine.windows import cut_windows
from tthf.export.validate import compare, tolerances

CPU_BACKENDS = (
    "torch-fp32",
    "torch-bf16",
    "onnxruntime-fp32",
    "onnxruntime-fp32-intraop",
    "openvino-fp32",
    "openvino-bf16",
    "onnxruntime-int8",
)
GPU_BACKENDS = ("torch-cuda-fp32", "torch-cuda-autocast", "tensorrt-fp16")
PRECISION = {
    "torch-bf16": "fp16",
    "openvino-bf16": "fp16",
    "onnxruntime-int8": "fp16",
    "torch-cuda-autocast": "fp16",
    "tensorrt-fp16": "fp16",
}

OPENVINO = {"openvino-fp32": "openvino", "openvino-bf16": "openvino-bf16"}  # bench name -> tthf backend


def _threads() -> int:
    return len(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def windows(market, bench_run, sizes) -> np.ndarray:
    """Real scaled windows of the last market day, enough for the largest batch."""
    scaled, mask = day_windows(market, bench_run)
    cfg = bench_run.run.config
    out = np.empty((max(DENSE_BATCH, sizes.symbols), cfg.seq_len, len(cfg.feature_names)), np.float32)
    n, _ = cut_windows(scaled, mask, out)
    return out[:n]


def batch_sizes(sizes) -> list[int]:
    return sorted({1, 64, sizes.symbols, 256 if sizes.smoke else DENSE_BATCH})


def _torch_predictor(bench_run, device: str, autocast: str | None):
    import torch

    model = bench_run.run.load_model().to(device)

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        with (
            torch.inference_mode(),
            torch.autocast(device, dtype=getattr(torch, autocast or "float32"), enabled=autocast is not None),
        ):
            out = model(torch.from_numpy(x).to(device))
        return {n: t.float().cpu().numpy() for n, t in zip(OUTPUT_NAMES, out)}

    return predict


def open_predictor(name: str, bench_run):
    """``predict(batch) -> {output: (B,)}`` for ``name``, or pytest.skip with the reason."""
    import torch

    from tthf.engine.runtime.backends import OnnxRuntimeBackend, TorchBackend, open_backend
    from tthf.errors import BackendUnavailableError

    torch.set_num_threads(_threads())
    if name in GPU_BACKENDS and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if name == "torch-fp32":
        return TorchBackend.from_run(bench_run.run, device="cpu", batch_size=DENSE_BATCH).predict
    if name == "torch-bf16":
        if not cpu_has_bf16():
            pytest.skip("this CPU has no native bf16 (avx512_bf16 / amx_bf16); autocast would emulate it")
        return _torch_predictor(bench_run, "cpu", "bfloat16")
    if name == "onnxruntime-fp32":
        return OnnxRuntimeBackend.from_run(
            bench_run.run, threads=_threads(), providers=["CPUExecutionProvider"]
        ).predict
    if name == "onnxruntime-fp32-intraop":
        return OnnxRuntimeBackend.from_run(
            bench_run.run, threads=_threads(), providers=["CPUExecutionProvider"], data_parallel=False
        ).predict
    if name in OPENVINO:
        try:
            return open_backend(bench_run.run, OPENVINO[name], threads=_threads()).predict
        except BackendUnavailableError as exc:
            pytest.skip(f"{OPENVINO[name]} unavailable: {exc}")
    if name == "onnxruntime-int8":
        return _int8_predictor(bench_run)
    if name == "torch-cuda-fp32":
        return _torch_predictor(bench_run, "cuda", None)
    if name == "torch-cuda-autocast":
        return _torch_predictor(bench_run, "cuda", "float16")
    try:
        return open_backend(bench_run.run, "tensorrt").predict
    except BackendUnavailableError as exc:
        pytest.skip(f"TensorRT unavailable: {exc}")


def _int8_predictor(bench_run):
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = bench_run.path.parent / "bench-model-int8.onnx"
    if not dst.exists():
        # The exporter's value_info pins some shapes that the quantizer's shape inference
        # then contradicts; drop it and let the quantizer infer every shape afresh.
        model = onnx.load(str(bench_run.path / "export" / "model.onnx"))
        del model.graph.value_info[:]
        src = bench_run.path.parent / "bench-model-fp32-noinfo.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads()
    session = ort.InferenceSession(str(dst), opts, providers=["CPUExecutionProvider"])
    return lambda x: dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"features": x})))


@pytest.fixture(scope="module")
def reference(bench_run, windows) -> dict[str, np.ndarray]:
    return _torch_predictor(bench_run, "cpu", None)(windows)


@pytest.fixture(scope="module")
def model_flops(bench_run) -> int:
    """FLOPs of one window (matmuls, as FlopCounterMode counts them)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cfg = bench_run.run.config
    model = bench_run.run.load_model()
    x = torch.zeros(16, cfg.seq_len, len(cfg.feature_names))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 16


_accuracy: dict[str, dict] = {}


@pytest.mark.parametrize("batch_index", range(4))
@pytest.mark.parametrize("backend", CPU_BACKENDS + GPU_BACKENDS)
def test_inference(
    benchmark, sizes, bench_run, windows, reference, model_flops, backend: str, batch_index: int
) -> None:
    batches = batch_sizes(sizes)
    if batch_index >= len(batches):
        pytest.skip(f"the symbol count {sizes.symbols} equals another batch size")
    batch = batches[batch_index]
    predict = open_predictor(backend, bench_run)
    if backend not in _accuracy:
        precision = PRECISION.get(backend, "fp32")
        results = compare(
            reference,
            predict(windows),
            artifact=backend,
            backend=backend,
            inputs=f"real@{len(windows)}",
            precision=precision,
            tolerance=tolerances(precision, bench_run.run.config.model),
        )
        _accuracy[backend] = {
            "bar": precision,
            "validated": all(r.violations == 0 for r in results),
            "max_abs": {r.output: r.max_abs for r in results},
        }
        if precision == "fp32":
            assert _accuracy[backend]["validated"], f"{backend} disagrees with the reference: {_accuracy[backend]}"
    x = np.ascontiguousarray(windows[:batch])
    benchmark.group = f"inference batch {batch}"
    benchmark.extra_info.update(
        section="inference",
        variant=backend,
        batch=batch,
        units=batch,
        unit="windows",
        flops_per_window=model_flops,
        accuracy=_accuracy[backend],
        threads=_threads(),
    )
    out = benchmark(predict, x)
    assert all(out[n].shape == (batch,) and np.isfinite(out[n]).all() for n in OUTPUT_NAMES)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_rate(benchmark, sizes, dtype: str) -> None:
    """torch's n x n matmul rate on this machine's threads: the roofline's denominator."""
    import torch

    if dtype == "bfloat16" and not cpu_has_bf16():
        pytest.skip("no native bf16 on this CPU")
    torch.set_num_threads(_threads())
    n = 256 if sizes.smoke else 2048
    a = torch.randn(n, n).to(getattr(torch, dtype))
    b = torch.randn(n, n).to(getattr(torch, dtype))
    benchmark.group = "matmul"
    benchmark.extra_info.update(
        section="matmul", variant=dtype, n=n, flops=2 * n**3, units=2 * n**3, unit="flop", threads=_threads()
    )
    out = benchmark(torch.mm, a, b)
    assert out.shape == (n, n)

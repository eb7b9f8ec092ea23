"""Inference speed per backend and batch size, against the machine's measured matmul rate.

Backends (each skipped with the reason where it cannot run):

- ``torch-fp32``: tthf's torch backend, the eager PyTorch reference;
- ``torch-bf16``: the same model under CPU bf16 autocast (CPUs with avx512_bf16 / AMX);
- ``onnxruntime-fp32``: tthf's onnxruntime backend on the exported ``model.onnx`` (on CPU:
  one single-threaded session per core, the batch split between them);
- ``onnxruntime-fp32-intraop``: the same model in one session with one intra-op thread per
  core, sequential execution (the previous default, kept to show what the data-parallel
  split buys);
- ``onnxruntime-fp32-parallel``: one session, intra-op and inter-op threads per core,
  ``ORT_PARALLEL`` execution (independent nodes side by side), in the same sub-batches;
- ``openvino-fp32`` / ``openvino-bf16``: tthf's openvino backends on the same ``model.onnx``
  (bf16 only on CPUs with native bf16, recorded against the fp16 bar);
- ``openvino-int8``: the int8 IR that ``tthf-export --int8`` quantized (NNCF, calibrated on the
  run's training dates), opened from the export whether or not export accepted it (the row's
  accuracy records the export's verdict); on a CPU without VNNI/AMX the row says so instead of a
  number (OpenVINO would run it, without the instructions that make int8 fast);
- ``openvino-fp32-latency``: OpenVINO fp32 with ``PERFORMANCE_HINT=LATENCY``, one stream
  with every core (the issue's measurement; bench/tune_openvino.py's
  ``latency-1x-all-cores-sub1024``);
- ``onnxruntime-int8``: ``model.onnx`` with dynamically quantized int8 weights (a candidate
  faster CPU path, not a tthf backend: its accuracy is recorded against the fp16 bar);
- on CUDA hosts: ``torch-cuda-fp32``, ``torch-cuda-autocast`` (fp16) and ``tensorrt-fp16``.

Models: ``default`` (the default ModelConfig) and ``production`` (conftest's
``PRODUCTION_MODEL``: d_model 128, 4 layers, 8 heads, d_ff 512), random weights, both
exported the same way; the production model skips ``NOT_FOR_PRODUCTION``. Smoke mode runs the
production model at one batch (``SMOKE_PRODUCTION_BATCH``) only.

Batches: 1, 64, the symbol count (one minute of the whole universe) and the dense
runner's 4096, of real scaled windows. ``test_matmul_rate`` measures torch's fp32 and
bf16 matrix-multiply rate on the same threads; report.py divides the model's FLOPs per
window (counted by torch's FlopCounterMode) times windows per second by it: the roofline
fraction. Every backend's outputs are compared with the fp32 reference first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pytest
from benchlib import cpu_has_bf16, cpu_has_vnni, day_windows

from tthf.engine.config import DENSE_BATCH, OUTPUT_NAMES
from tthf.engine.model.interface import predict_in_chunks
from tthf.engine.windows import cut_windows
from tthf.export.validate import bars, compare

if TYPE_CHECKING:
    from conftest import BenchRun

CPU_BACKENDS = (
    "torch-fp32",
    "torch-bf16",
    "onnxruntime-fp32",
    "onnxruntime-fp32-intraop",
    "onnxruntime-fp32-parallel",
    "openvino-fp32",
    "openvino-fp32-latency",
    "openvino-bf16",
    "openvino-int8",
    "onnxruntime-int8",
)
GPU_BACKENDS = ("torch-cuda-fp32", "torch-cuda-autocast", "tensorrt-fp16")
PRECISION = {
    "torch-bf16": "bf16",
    "openvino-bf16": "bf16",
    "openvino-int8": "int8",
    "onnxruntime-int8": "fp16",
    "torch-cuda-autocast": "fp16",
    "tensorrt-fp16": "fp16",
}

OPENVINO = {"openvino-fp32": "openvino", "openvino-bf16": "openvino-bf16"}  # bench name -> tthf backend
MODELS = ("default", "production")
#: measured on the default model only: the int8 candidate (a question about the default model) and
#: ORT_PARALLEL (slower than every other ONNX Runtime setting on both models in the first run with
#: the production model, and the production model's slowest row: seconds a call at batch 4096)
NOT_FOR_PRODUCTION = ("onnxruntime-int8", "onnxruntime-fp32-parallel")
SMOKE_PRODUCTION_BATCH = 64
#: from this batch on, a production-model call takes seconds: fixed rounds instead of calibrated ones
PRODUCTION_PEDANTIC_BATCH = 1000


def _threads() -> int:
    return len(os.sched_getaffinity(0))


def batch_sizes(sizes, model: str = "default") -> list[int]:
    if model == "production" and sizes.smoke:
        return [SMOKE_PRODUCTION_BATCH]
    return sorted({1, 64, sizes.symbols, 256 if sizes.smoke else DENSE_BATCH})


def real_windows(market, bench_run, count: int) -> np.ndarray:
    """Up to ``count`` real scaled windows of the last market day."""
    scaled, mask = day_windows(market, bench_run)
    cfg = bench_run.run.config
    out = np.empty((count, cfg.seq_len, len(cfg.feature_names)), np.float32)
    n, _ = cut_windows(scaled, mask, out)
    return out[:n]


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


@dataclass
class Case:
    """One model's exported run, real windows enough for its largest batch, the fp32 reference and FLOPs."""

    bench_run: BenchRun
    windows: np.ndarray
    reference: dict[str, np.ndarray]
    flops: int
    accuracy: dict[str, dict] = field(default_factory=dict)  # backend -> accuracy, measured once


@pytest.fixture(scope="module")
def cases(request, market, sizes):
    """``case(model)``: built on first use, so a run that selects only one model exports only that one."""
    built: dict[str, Case] = {}

    def case(model: str) -> Case:
        if model not in built:
            bench_run = request.getfixturevalue("bench_run" if model == "default" else "production_run")
            windows = real_windows(market, bench_run, max(batch_sizes(sizes, model)))
            reference = _torch_predictor(bench_run, "cpu", None)(windows)
            built[model] = Case(bench_run, windows, reference, model_flops(bench_run))
        return built[model]

    return case


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
    if name == "onnxruntime-fp32-parallel":
        return _ort_parallel_predictor(bench_run)
    if name == "openvino-fp32-latency":
        return _openvino_latency_predictor(bench_run)
    if name == "openvino-int8":
        return _openvino_int8_predictor(bench_run)
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


def _ort_parallel_predictor(bench_run):
    """One ONNX Runtime session in ORT_PARALLEL mode (intra- and inter-op threads per core), backend sub-batches."""
    import onnxruntime as ort

    from tthf.engine.runtime.backends.base import exported_onnx
    from tthf.engine.runtime.backends.onnxruntime import MAX_SUB_BATCH

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = _threads()
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    session = ort.InferenceSession(exported_onnx(bench_run.run), opts, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"features": x})))

    return lambda x: predict_in_chunks(run, x, MAX_SUB_BATCH)


def _openvino_int8_predictor(bench_run):
    """tthf's openvino-int8 backend on the exported int8 IR, served even where export rejected it."""
    from tthf.engine import artifacts, runs
    from tthf.engine.runtime.backends import OpenVinoInt8Backend
    from tthf.errors import BackendUnavailableError

    if not cpu_has_vnni():
        pytest.skip("this CPU has no VNNI or AMX-INT8: int8 would run without its instructions")
    manifest = artifacts.open_fresh(bench_run.run)
    try:
        files = {n: artifacts.read_artifact(bench_run.run, manifest, n) for n in (runs.INT8_XML, runs.INT8_BIN)}
        return OpenVinoInt8Backend(files[runs.INT8_XML], weights=files[runs.INT8_BIN], threads=_threads()).predict
    except BackendUnavailableError as exc:
        pytest.skip(f"openvino-int8 unavailable: {exc}")


def _openvino_latency_predictor(bench_run):
    """OpenVINO fp32, PERFORMANCE_HINT=LATENCY: one stream with every core, sub-batches of 1024."""
    from tthf.engine.runtime.backends import OpenVinoBackend
    from tthf.errors import BackendUnavailableError

    try:
        backend = OpenVinoBackend.from_run(bench_run.run, hint="LATENCY", streams=1, threads=_threads(), sub_batch=1024)
    except BackendUnavailableError as exc:
        pytest.skip(f"openvino unavailable: {exc}")
    return backend.predict


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


def _accuracy(case: Case, backend: str, predict) -> dict:
    """``backend`` against the fp32 reference on every real window of ``case`` (fp32 backends must be within the bar)."""
    precision = PRECISION.get(backend, "fp32")
    results = compare(
        case.reference,
        predict(case.windows),
        artifact=backend,
        backend=backend,
        inputs=f"real@{len(case.windows)}",
        precision=precision,
        tolerance=bars(precision, case.bench_run.run.config.model),
    )
    accuracy = {
        "bar": precision,
        "validated": all(r.passed for r in results),
        "max_abs": {r.output: r.max_abs for r in results},
        # reduced precisions: p99.9 error / the reference's spread, per output (the spread bar's statistic)
        "q_ratio": {r.output: r.q_ratio for r in results if r.spread},
    }
    if precision == "fp32":
        assert accuracy["validated"], f"{backend} disagrees with the reference: {accuracy}"
    return accuracy


def _model_info(model: str, bench_run) -> dict:
    cfg = bench_run.run.config.model
    return {"model": model, "model_config": {k: getattr(cfg, k) for k in ("d_model", "n_layers", "n_heads", "d_ff")}}


@pytest.mark.parametrize("batch_index", range(4))
@pytest.mark.parametrize("backend", CPU_BACKENDS + GPU_BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_inference(benchmark, sizes, cases, model: str, backend: str, batch_index: int) -> None:
    batches = batch_sizes(sizes, model)
    if batch_index >= len(batches):
        pytest.skip(
            f"smoke mode runs the production model at batch {SMOKE_PRODUCTION_BATCH} only"
            if len(batches) == 1
            else f"the symbol count {sizes.symbols} equals another batch size"
        )
    if model == "production" and backend in NOT_FOR_PRODUCTION:
        pytest.skip(f"{backend} is measured on the default model only")
    batch = batches[batch_index]
    case = cases(model)
    predict = open_predictor(backend, case.bench_run)
    if backend not in case.accuracy:
        case.accuracy[backend] = _accuracy(case, backend, predict)
    x = np.ascontiguousarray(case.windows[:batch])
    benchmark.group = f"inference {model} batch {batch}"
    benchmark.extra_info.update(
        section="inference",
        variant=backend,
        batch=batch,
        units=batch,
        unit="windows",
        flops_per_window=case.flops,
        accuracy=case.accuracy[backend],
        threads=_threads(),
        **_model_info(model, case.bench_run),
    )
    if model == "production" and batch >= PRODUCTION_PEDANTIC_BATCH:
        # a call takes seconds here: 3 timed rounds after a warm one bound the suite's time
        out = benchmark.pedantic(predict, args=(x,), rounds=3, warmup_rounds=1)
    else:
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

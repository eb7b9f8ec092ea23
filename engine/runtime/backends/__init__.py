"""Inference backends behind one interface: ``Backend.predict(batch) -> {output: (B,) float32}``.

- ``torch``: the PyTorch reference from the checkpoint (CUDA with fp16 autocast when
  available, else fp32 on CPU).
- ``onnxruntime``: the exported fp32 ``model.onnx`` with the best provider present
  (TensorRT EP, CUDA EP, else CPU); on CUDA the batch goes through I/O binding; on CPU
  one single-threaded session per core, each batch split between them (data parallel).
- ``tensorrt``: the native fp16 engine for this host's GPU and TensorRT version; when
  the run was exported elsewhere, the engine is rebuilt from ``model_fp16.onnx`` (and
  validated) or, with ``rebuild_engine=False``, refused with the command that builds it.
- ``auto``: the fastest that can run here, in the order tensorrt > onnxruntime >
  torch (docs/export.md has the measurements behind the order), and it says which.

Every exported artifact is checked against ``export/manifest.json`` first: an export
made from another checkpoint, config or scalers, or an artifact whose bytes changed, is
a ``StaleArtifactError`` that says to re-export.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.runs import Run
from tthf.errors import BackendUnavailableError, StaleArtifactError, UsageError

log = logging.getLogger("tthf")

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
INPUT_NAME = "features"
# CPU data parallelism (docs/export.md, "CPU inference speed"): a batch is split over the
# sessions only as far as every shard gets at least MIN_SHARD windows, and each shard runs
# in sub-batches of at most MAX_SUB_BATCH windows (measured best of 32..4096).
MIN_SHARD = 64
MAX_SUB_BATCH = 128


def _session_options(ort: Any, threads: int) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class Backend(ABC):
    """A loaded model that maps (B, seq_len, F) float32 scaled windows to the four outputs."""

    name: str
    detail: str  # device / provider, for logs and manifests

    @abstractmethod
    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``batch`` (B, seq_len, F) float32 -> {name: (B,) float32} for every name in OUTPUT_NAMES."""

    def versions(self) -> dict[str, str]:
        return {"backend": f"{self.name} ({self.detail})"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail})"


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, run: Run, *, device: str | None = None, batch_size: int = 8192) -> None:
        import torch

        from tthf.export.api import load_reference

        self._torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_reference(run).to(self.device)
        self.batch_size = batch_size
        self.detail = str(self.device)

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        parts = []
        # fp16 autocast on CUDA, as the original workflow ran; fp32 on CPU (the reference).
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda")
        with torch.inference_mode(), autocast:
            for i in range(0, len(batch), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(batch[i:i + self.batch_size], dtype=np.float32))
                parts.append([t.float().cpu().numpy() for t in self.model(x.to(self.device))])
        if not parts:
            return {n: np.empty(0, dtype=np.float32) for n in OUTPUT_NAMES}
        return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(OUTPUT_NAMES)}

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "torch": self._torch.__version__}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    def __init__(self, run: Run, *, threads: int | None = None, providers: list[str] | None = None,
                 data_parallel: bool = True, sub_batch: int = MAX_SUB_BATCH) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                "onnxruntime is not installed; pip install 'tthf[cpu]' (or 'tthf[gpu]' on a GPU host), "
                "or use --backend torch"
            ) from exc
        from tthf.export.api import FP32_ONNX
        from tthf.export.manifest import Manifest, check_fresh, read_artifact

        manifest = Manifest.read(run)
        check_fresh(run, manifest)
        model = read_artifact(run, manifest, FP32_ONNX)
        available = ort.get_available_providers()
        chosen = [p for p in (providers or self.PREFERENCE) if p in available]
        if not chosen:
            raise BackendUnavailableError(f"none of the providers {providers} is available here (have {available})")
        if sub_batch < 1:
            raise UsageError(f"sub_batch must be >= 1, got {sub_batch}")
        self._ort = ort
        self.sub_batch = sub_batch
        threads = threads or len(os.sched_getaffinity(0))
        self.session = ort.InferenceSession(model, _session_options(ort, 1 if data_parallel else threads),
                                            providers=chosen)
        active = self.session.get_providers()
        self.on_gpu = active[0] != "CPUExecutionProvider"
        self.sessions = [self.session]
        if not self.on_gpu and data_parallel and threads > 1:
            self.sessions += [ort.InferenceSession(model, _session_options(ort, 1), providers=chosen)
                              for _ in range(threads - 1)]
        self._pool = (ThreadPoolExecutor(len(self.sessions), thread_name_prefix="tthf-ort")
                      if len(self.sessions) > 1 else None)
        self.detail = active[0] if self.on_gpu else (
            f"{active[0]}, {len(self.sessions)} session(s) x {1 if data_parallel else threads} thread(s)")

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.on_gpu:
            return self._predict_gpu(x)
        n = len(x)
        if n <= self.sub_batch:
            return self._run_cpu(self.session, x)
        # Data parallel: one contiguous shard per single-threaded session (ONNX Runtime
        # releases the GIL), each run in sub-batches. The model's ops are too small for
        # intra-op threads to pay: docs/export.md, "CPU inference speed".
        shards = max(1, min(len(self.sessions), n // MIN_SHARD))
        bounds = np.linspace(0, n, shards + 1).astype(int)
        out = {name: np.empty(n, dtype=np.float32) for name in OUTPUT_NAMES}

        def work(i: int) -> None:
            lo, hi = bounds[i], bounds[i + 1]
            for a in range(lo, hi, self.sub_batch):
                part = self._run_cpu(self.sessions[i], x[a:min(a + self.sub_batch, hi)])
                for name in OUTPUT_NAMES:
                    out[name][a:a + len(part[name])] = part[name]

        if shards == 1 or self._pool is None:
            work(0)
        else:
            for future in [self._pool.submit(work, i) for i in range(shards)]:
                future.result()
        return out

    @staticmethod
    def _run_cpu(session: Any, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})))

    def _predict_gpu(self, x: np.ndarray) -> dict[str, np.ndarray]:
        # One host->device copy of the batch and device-side outputs, copied back once.
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, self._ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for name in OUTPUT_NAMES:
            binding.bind_output(name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return dict(zip(OUTPUT_NAMES, binding.copy_outputs_to_cpu()))

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "onnxruntime": self._ort.__version__}


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, run: Run, *, rebuild_engine: bool = True) -> None:
        from tthf.export import tensorrt_engine as trt_engine
        from tthf.export.api import rebuild_engine as rebuild
        from tthf.export.manifest import Manifest, check_fresh, read_artifact

        target = trt_engine.current_target()  # BackendUnavailableError without TensorRT or a GPU
        manifest = Manifest.read(run)
        check_fresh(run, manifest)
        name = target.engine_filename()
        if name not in manifest.artifacts:
            built = [k for k, v in manifest.artifacts.items() if v.get("kind") == "tensorrt"]
            elsewhere = (f"engines exist only for {', '.join(built)}" if built
                         else f"no engine was built ({manifest.engine.get('reason', 'unknown reason')})")
            if not rebuild_engine:
                raise StaleArtifactError(
                    f"run {run.ref.name} has no TensorRT engine for {target.gpu_name} (compute "
                    f"{target.compute_capability}, TensorRT {target.tensorrt_version}): {elsewhere}; build it here "
                    f"with: tthf-export --run {run.ref.run_id} --require-engine"
                )
            log.info("no engine for %s / TensorRT %s (%s); building it from the exported fp16 ONNX",
                     target.sm, target.tensorrt_version, elsewhere)
            rebuild(run, manifest)
        self.engine = trt_engine.TensorRTEngine(read_artifact(run, manifest, name), source=run.store.uri(f"export/{name}"))
        self.detail = f"{target.gpu_name}, {name}"
        self._trt_version = target.tensorrt_version

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.engine.predict(batch)

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "tensorrt": self._trt_version}


def open_backend(run: Run, name: str, *, threads: int | None = None, rebuild_engine: bool = True) -> Backend:
    """Open backend ``name`` (one of ``BACKENDS``) for ``run``; ``auto`` logs what it picked and why."""
    if name == "torch":
        return TorchBackend(run)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(run, threads=threads)
    if name == "tensorrt":
        return TensorRTBackend(run, rebuild_engine=rebuild_engine)
    if name != "auto":
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    from tthf.export.manifest import MANIFEST

    if not run.exists(MANIFEST):
        log.warning("backend auto: run %s has no export, using torch; run tthf-export --run %s for faster inference",
                    run.ref.name, run.ref.run_id)
        return TorchBackend(run)
    skipped = []
    for candidate in ("tensorrt", "onnxruntime"):
        try:
            backend = open_backend(run, candidate, threads=threads, rebuild_engine=rebuild_engine)
        except BackendUnavailableError as exc:  # stale exports are not skipped: they are errors
            skipped.append(f"{candidate}: {exc}")
            continue
        log.info("backend auto: using %s (%s)%s", backend.name, backend.detail,
                 f"; skipped {'; '.join(skipped)}" if skipped else "")
        return backend
    log.info("backend auto: using torch; skipped %s", "; ".join(skipped))
    return TorchBackend(run)

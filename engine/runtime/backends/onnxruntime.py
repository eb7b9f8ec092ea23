"""ONNX Runtime as a backend: the exported fp32 ``model.onnx`` with the best provider present.

Provider order: TensorRT EP, CUDA EP, then CPU. On CUDA the batch goes through I/O
binding (and the CUDA runner binds its device buffers directly). On the CPU, one
single-threaded session per core and each batch split between them (data parallel), in
sub-batches: the model's ops are too small for intra-op threads to pay (docs/export.md,
"CPU inference speed"). Export validates through this same class, so what was validated
is what serves.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import INPUT_NAME, Outputs, empty_outputs
from tthf.engine.runs import Run
from tthf.engine.runtime.backends.base import Backend, DeviceEngine, exported_onnx, split_batch, write_outputs
from tthf.errors import BackendUnavailableError, UsageError

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# A batch is split over the sessions only as far as every shard gets at least MIN_SHARD
# windows, and each shard runs in sub-batches of at most MAX_SUB_BATCH windows (measured
# best of 32..4096).
MIN_SHARD = 64
MAX_SUB_BATCH = 128


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is not installed; pip install 'tthf[cpu]' (on a GPU host 'tthf[gpu-cu12]' or "
            "'tthf[gpu-cu13]', torch's CUDA major), or use --backend torch"
        ) from exc
    return ort


def provider_options(provider: str, device_id: int, cache_dir: str) -> dict[str, str]:
    """What each GPU provider needs to run what was validated, on the device the runner binds.

    - CUDA: TF32 off (its default is on), so the backend is the fp32 it is labelled;
    - TensorRT EP: its engines cached on disk (else it rebuilds at every start and on new
      batch shapes); fp32, like the model it runs;
    - both on ``device_id``, the device whose buffers the CUDA runner binds.
    """
    if provider == "CUDAExecutionProvider":
        return {"device_id": str(device_id), "use_tf32": "0"}
    if provider == "TensorrtExecutionProvider":
        return {
            "device_id": str(device_id),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": cache_dir,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": cache_dir,
        }
    return {}


def _device_id() -> int:
    import torch

    return int(torch.cuda.current_device()) if torch.cuda.is_available() else 0


def _cache_dir() -> str:
    """Where ORT's TensorRT provider keeps its engines: $TTHF_CACHE or ~/.cache/tthf, per user."""
    root = os.environ.get("TTHF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tthf")
    return os.path.join(root, "ort-tensorrt")


def _session_options(ort: Any, threads: int) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        model: bytes,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        data_parallel: bool = True,
        sub_batch: int = MAX_SUB_BATCH,
    ) -> None:
        ort = _import_ort()
        available = ort.get_available_providers()
        chosen = [p for p in (providers or PREFERENCE) if p in available]
        if not chosen:
            raise BackendUnavailableError(f"none of the providers {providers} is available here (have {available})")
        if sub_batch < 1:
            raise UsageError(f"sub_batch must be >= 1, got {sub_batch}")
        self._ort = ort
        self.sub_batch = sub_batch
        threads = threads or len(os.sched_getaffinity(0))
        on_device = [p for p in chosen if p != "CPUExecutionProvider"]
        device_id = _device_id() if on_device else 0
        if "TensorrtExecutionProvider" in on_device:
            os.makedirs(_cache_dir(), exist_ok=True)
        options = [provider_options(p, device_id, _cache_dir()) for p in chosen]
        self.device_id = device_id
        self.session = ort.InferenceSession(
            model, _session_options(ort, 1 if data_parallel else threads), providers=chosen, provider_options=options
        )
        active = self.session.get_providers()
        self.on_gpu = active[0] != "CPUExecutionProvider"
        self.sessions = [self.session]
        if not self.on_gpu and data_parallel and threads > 1:
            self.sessions += [
                ort.InferenceSession(model, _session_options(ort, 1), providers=chosen, provider_options=options)
                for _ in range(threads - 1)
            ]
        self._pool = (
            ThreadPoolExecutor(len(self.sessions), thread_name_prefix="tthf-ort") if len(self.sessions) > 1 else None
        )
        self.detail = (
            active[0]
            if self.on_gpu
            else (f"{active[0]}, {len(self.sessions)} session(s) x {1 if data_parallel else threads} thread(s)")
        )

    @classmethod
    def from_run(cls, run: Run, **options: Any) -> OnnxRuntimeBackend:
        """The run's exported ``model.onnx``, after checking the export is fresh."""
        _import_ort()  # an absent onnxruntime is "unavailable" (auto skips it), not a stale export
        return cls(exported_onnx(run), **options)

    def predict(self, batch: np.ndarray) -> Outputs:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.on_gpu:
            return self._predict_gpu(x)
        if len(x) <= self.sub_batch:
            return self._run_cpu(self.session, x)
        # Data parallel: one contiguous shard per single-threaded session (ONNX Runtime
        # releases the GIL), each run in sub-batches.
        shards = split_batch(len(x), len(self.sessions), self.sub_batch, MIN_SHARD)
        out = empty_outputs(len(x))

        def work(i: int) -> None:
            for part in shards[i]:
                write_outputs(out, part, self._run_cpu(self.sessions[i], x[part]))

        if len(shards) == 1 or self._pool is None:
            work(0)
        else:
            for future in [self._pool.submit(work, i) for i in range(len(shards))]:
                future.result()
        return out

    @staticmethod
    def _run_cpu(session: Any, x: np.ndarray) -> Outputs:
        return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})))

    def _predict_gpu(self, x: np.ndarray) -> Outputs:
        # One host->device copy of the batch and device-side outputs, copied back once.
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, self._ort.OrtValue.ortvalue_from_numpy(x, "cuda", self.device_id))
        for name in OUTPUT_NAMES:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(OUTPUT_NAMES, binding.copy_outputs_to_cpu()))

    def device_engine(self) -> DeviceEngine | None:
        if not self.on_gpu:
            return None
        import torch

        session = self.session
        binding = session.io_binding()
        device_id = self.device_id  # the device the session runs on

        def execute(x: Any, outs: dict[str, Any], n: int, stream: Any) -> None:
            binding.bind_input(INPUT_NAME, "cuda", device_id, np.float32, (n, *x.shape[1:]), x.data_ptr())
            for name, tensor in outs.items():
                binding.bind_output(name, "cuda", device_id, np.float32, (n,), tensor.data_ptr())
            session.run_with_iobinding(binding)

        return DeviceEngine(execute, dict.fromkeys(OUTPUT_NAMES, torch.float32), synchronous=True)

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "onnxruntime": self._ort.__version__}

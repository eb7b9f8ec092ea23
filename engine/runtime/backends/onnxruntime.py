"""ONNX Runtime as a backend: the exported fp32 ``model.onnx`` with the best provider present.

Provider order: TensorRT EP, CUDA EP, then CPU. On CUDA the session computes on one
torch CUDA stream given as its ``user_compute_stream`` and runs without the end-of-run
host synchronization (``disable_synchronize_execution_providers``): ``predict`` binds
pinned-and-device buffers reused across calls, and the CUDA runner uses that stream as its
compute stream, so ONNX Runtime's kernels are ordered with the ring's copies by CUDA
events instead of blocking the host (findings 11 and 15 in docs/gpu-audit-status.md). On the CPU, one
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
from tthf.engine.runs import FP16_ONNX, FP32_ONNX, Run
from tthf.engine.runtime.backends.base import (
    AutoRank,
    Backend,
    BackendSpec,
    DeviceEngine,
    Needs,
    exported_onnx,
    split_batch,
    write_outputs,
)
from tthf.engine.runtime.pinned import PinnedPredict
from tthf.errors import BackendError, BackendUnavailableError, UsageError

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


#: RunOptions entry: do not synchronize the CUDA stream with the host at the end of a run
NO_SYNC = "disable_synchronize_execution_providers"


def provider_options(provider: str, device_id: int, cache_dir: str, stream: int | None = None) -> dict[str, str]:
    """What each GPU provider needs to run what was validated, on the device and stream the runner uses.

    - CUDA: TF32 off (its default is on), so the backend is the fp32 it is labelled;
    - TensorRT EP: its engines cached on disk (else it rebuilds at every start and on new
      batch shapes); fp32, like the model it runs;
    - both on ``device_id``, the device whose buffers the CUDA runner binds, and, given a
      ``stream`` (a ``cudaStream_t`` as an int: ``torch.cuda.Stream().cuda_stream``), computing
      on it (``user_compute_stream``; ONNX Runtime then sets ``has_user_compute_stream``).
      The default stream (0) is refused: ONNX Runtime reads 0 as "no stream".
    """
    if stream == 0:
        raise UsageError("the default CUDA stream (0) cannot be ONNX Runtime's compute stream; pass a created stream")
    on_stream = {} if stream is None else {"user_compute_stream": str(stream)}
    if provider == "CUDAExecutionProvider":
        return {"device_id": str(device_id), "use_tf32": "0", **on_stream}
    if provider == "TensorrtExecutionProvider":
        return {
            "device_id": str(device_id),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": cache_dir,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": cache_dir,
            **on_stream,
        }
    return {}


def _gpu_stream(on_device: list[str]) -> Any:
    """The torch CUDA stream a GPU session computes on; None without GPU providers or without CUDA torch.

    Importing torch first also loads its CUDA libraries, which ONNX Runtime's CUDA provider
    then finds (finding 26 in docs/gpu-audit-status.md).
    """
    if not on_device:
        return None
    import torch

    return torch.cuda.Stream() if torch.cuda.is_available() else None


def _device_id() -> int:
    import torch

    return int(torch.cuda.current_device()) if torch.cuda.is_available() else 0


def _torch_cuda() -> str | None:
    import torch

    return torch.version.cuda


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
        self.stream = _gpu_stream(on_device)
        handle = None if self.stream is None else int(self.stream.cuda_stream)
        options = [provider_options(p, device_id, _cache_dir(), handle) for p in chosen]
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
        if self.on_gpu and self.stream is None:
            raise BackendUnavailableError(
                f"onnxruntime runs on {active[0]} but torch has no CUDA (torch.version.cuda is "
                f"{_torch_cuda()}): tthf's GPU buffers and streams are torch's; install the CUDA torch of "
                "onnxruntime-gpu's CUDA major (README, 'Install on a GPU host'), or use --backend torch"
            )
        self._binding: Any = self.session.io_binding() if self.on_gpu else None  # one, rebound per batch
        self._run_options: Any = None
        if self.on_gpu:
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry(NO_SYNC, "1")  # ordered by the stream, not by the host
        self._gpu_predict: PinnedPredict | None = None
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

    @classmethod
    def from_onnx(cls, model: bytes) -> OnnxRuntimeBackend:
        """As export validates: on the CPU provider (whatever else is installed), data parallel as served on the CPU."""
        return cls(model, providers=["CPUExecutionProvider"])

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
        """One persistent binding over buffers grown to the largest batch: no allocation per call, one sync."""
        if self._gpu_predict is None:
            import torch

            self._gpu_predict = PinnedPredict(self._execute, dict.fromkeys(OUTPUT_NAMES, torch.float32), self.stream)
        return self._gpu_predict(x)

    def _execute(self, x: Any, outs: dict[str, Any], n: int, stream: Any) -> None:
        """Run ``n`` windows at ``x`` (device) into ``outs`` (device), enqueued on the session's stream."""
        if int(stream.cuda_stream) != int(self.stream.cuda_stream):
            raise BackendError(
                "ONNX Runtime computes on the stream its session was created with; run it on backend.stream "
                "(the CUDA runner does: DeviceEngine.stream)"
            )
        binding = self._binding
        binding.bind_input(INPUT_NAME, "cuda", self.device_id, np.float32, (n, *x.shape[1:]), x.data_ptr())
        for name, tensor in outs.items():
            binding.bind_output(name, "cuda", self.device_id, np.float32, (n,), tensor.data_ptr())
        self.session.run_with_iobinding(binding, self._run_options)

    def device_engine(self) -> DeviceEngine | None:
        if not self.on_gpu:
            return None
        import torch

        return DeviceEngine(self._execute, dict.fromkeys(OUTPUT_NAMES, torch.float32), stream=self.stream)

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "onnxruntime": self._ort.__version__}


ONNXRUNTIME = OnnxRuntimeBackend.spec = BackendSpec(
    "onnxruntime",
    OnnxRuntimeBackend,
    precision="fp32",
    device="cpu",  # on the GPU too where a GPU build and CUDA torch are installed
    needs=Needs(("onnxruntime",), FP32_ONNX),
    # after OpenVINO on the CPU (docs/export.md, "OpenVINO"); on a CUDA host its GPU session goes first
    auto_rank=AutoRank(cpu=2, cuda=1),
    options=("threads",),
    also_validates=((FP16_ONNX, "fp16"),),
)

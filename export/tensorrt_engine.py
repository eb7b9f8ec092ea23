"""Build, load and run the fp16 TensorRT engine with NVIDIA's Python API.

The network is strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``):
precision comes from the tensor types of ``model_fp16.onnx`` (export/fp16.py), never
from a builder flag. TensorRT 11 requires this (its FP16 flag is gone); TensorRT 10
accepts the same flag, so one code path serves both.

An engine only runs on the GPU architecture and TensorRT version it was built with, so
its file name carries both (``engine_filename``), and so does the timing cache that is
saved next to it and reused by the next build. ``tensorrt`` and CUDA are imported
inside functions: this module imports on machines without either.

Device memory comes from torch CUDA tensors (torch is always installed), which also
provide the CUDA stream that ``execute_async_v3`` runs on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tthf.engine.config import OUTPUT_NAMES
from tthf.errors import BackendUnavailableError, ExportError, StaleArtifactError

log = logging.getLogger("tthf.export")

INPUT_NAME = "features"


@dataclass(frozen=True)
class GpuTarget:
    """What an engine is bound to: the GPU's compute capability and the TensorRT version."""

    gpu_name: str
    compute_capability: str  # "9.0"
    tensorrt_version: str
    cuda_version: str

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")

    def engine_filename(self) -> str:
        return f"model_fp16.{self.sm}.trt{self.tensorrt_version}.engine"

    def timing_cache_filename(self) -> str:
        return f"timing.{self.sm}.trt{self.tensorrt_version}.cache"


def unavailable_reason() -> str | None:
    """Why no engine can be built or run here, or None when TensorRT and a CUDA GPU are present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"the tensorrt package is not installed ({exc}); pip install 'tthf[gpu]' on a GPU host"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is visible to PyTorch (torch.cuda.is_available() is False)"
    return None


def current_target() -> GpuTarget:
    """The target of this host's first CUDA device; ``BackendUnavailableError`` if there is none."""
    reason = unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"TensorRT cannot run here: {reason}")
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return GpuTarget(
        gpu_name=torch.cuda.get_device_name(0),
        compute_capability=f"{major}.{minor}",
        tensorrt_version=trt.__version__,
        cuda_version=str(torch.version.cuda),
    )


def _logger() -> Any:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_bytes: bytes, *, seq_len: int, n_features: int, min_batch: int, opt_batches: tuple[int, ...],
                 max_batch: int, workspace_mib: int, timing_cache: bytes | None) -> tuple[bytes, bytes]:
    """Parse the fp16 ONNX, build a strongly typed engine; returns (engine, updated timing cache)."""
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(
            f"TensorRT's ONNX parser rejected model_fp16.onnx: {errors}; check the TensorRT version "
            "(10 or newer is supported)"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    cache = config.create_timing_cache(timing_cache or b"")
    if not config.set_timing_cache(cache, False):
        log.warning("the saved timing cache does not match this GPU/TensorRT; building without it")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    for opt in opt_batches:
        profile = builder.create_optimization_profile()
        profile.set_shape(
            INPUT_NAME, (min_batch, seq_len, n_features), (opt, seq_len, n_features), (max_batch, seq_len, n_features)
        )
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            "TensorRT failed to build the engine (its log above says why); try a larger --workspace-mib "
            "or a smaller --max-batch"
        )
    timing = config.get_timing_cache()
    return bytes(serialized), bytes(timing.serialize())


class TensorRTEngine:
    """A deserialized engine with one execution context; ``predict`` takes any batch size.

    Batches larger than the profiles' max are split. The optimization profile whose
    ``opt`` is nearest to the batch is selected before each run.
    """

    def __init__(self, engine_bytes: bytes, *, source: str) -> None:
        import tensorrt as trt
        import torch

        self._trt = trt
        self._torch = torch
        self._runtime = trt.Runtime(_logger())
        engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise StaleArtifactError(
                f"{source}: TensorRT {trt.__version__} cannot load this engine (built for another GPU or TensorRT "
                "version, or corrupt); rebuild it with tthf-export on this host"
            )
        self.engine = engine
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise StaleArtifactError(
                f"{source}: engine tensors {inputs} -> {outputs} do not match {INPUT_NAME!r} -> {list(OUTPUT_NAMES)}; "
                "re-run tthf-export"
            )
        self.output_dtypes = {n: torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(n)))).dtype
                              for n in outputs}
        self.profiles = [
            tuple(int(shape[0]) for shape in engine.get_tensor_profile_shape(INPUT_NAME, p))
            for p in range(engine.num_optimization_profiles)
        ]  # (min, opt, max) batch of each profile
        self.max_batch = min(p[2] for p in self.profiles)
        self._profile = -1

    def _select_profile(self, batch: int) -> None:
        fits = [i for i, (lo, _, hi) in enumerate(self.profiles) if lo <= batch <= hi]
        if not fits:
            raise ExportError(
                f"batch {batch} is outside every optimization profile {self.profiles}; rebuild the engine with "
                "tthf-export --min-batch/--max-batch covering it"
            )
        best = min(fits, key=lambda i: abs(self.profiles[i][1] - batch))
        if best != self._profile:
            self.context.set_optimization_profile_async(best, self.stream.cuda_stream)
            self._profile = best

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        parts = []
        for start in range(0, len(batch), self.max_batch):
            chunk = np.ascontiguousarray(batch[start:start + self.max_batch], dtype=np.float32)
            with torch.cuda.stream(self.stream):
                x = torch.from_numpy(chunk).to("cuda", non_blocking=False)
                self._select_profile(len(chunk))
                self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
                self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
                out = {n: torch.empty(len(chunk), dtype=d, device="cuda") for n, d in self.output_dtypes.items()}
                for name, tensor in out.items():
                    self.context.set_tensor_address(name, tensor.data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise ExportError("TensorRT execute_async_v3 failed (its log above says why)")
                self.stream.synchronize()
            parts.append({n: t.float().cpu().numpy() for n, t in out.items()})
        if not parts:
            return {n: np.empty(0, dtype=np.float32) for n in OUTPUT_NAMES}
        return {n: np.concatenate([p[n] for p in parts]) for n in OUTPUT_NAMES}

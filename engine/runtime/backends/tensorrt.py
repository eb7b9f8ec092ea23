"""TensorRT as a backend: the native fp16 engine for this host's GPU and TensorRT version.

An engine only runs on the GPU architecture and TensorRT version it was built with, so
its file name carries both (``GpuTarget.engine_filename``, named by ``tthf.engine.runs``).
When the run was exported elsewhere, the backend asks the ``rebuild`` action its caller
passed in (``tthf.export.rebuild_engine``: build from ``model_fp16.onnx`` and validate);
without one it refuses with the command that builds the engine. Building is an export
action, so this module never imports ``tthf.export``.

``tensorrt`` and CUDA are imported inside functions: this module imports on machines
without either. Device memory comes from torch CUDA tensors (torch is always installed),
which also provide the CUDA stream that ``execute_async_v3`` runs on.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from tthf.engine import artifacts, runs
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import INPUT_NAME, Outputs, predict_in_chunks
from tthf.engine.runtime import probes
from tthf.engine.runtime.backends.base import AutoRank, Backend, BackendSpec, DeviceEngine, FixedBatch, Needs, Rebuild
from tthf.engine.runtime.pinned import PinnedBuffers, PinnedPredict
from tthf.errors import BackendError, BackendUnavailableError, NotExportedError, StaleArtifactError

log = logging.getLogger("tthf")


@dataclass(frozen=True)
class GpuTarget:
    """What an engine is bound to: the GPU's compute capability and the TensorRT version.

    The manifest records every field with the engine. Two CUDA versions matter and may
    differ: torch's (``torch.version.cuda``, the libraries the runner's buffers and streams
    use) and TensorRT's (the ``tensorrt-cuNN`` wheel installed; it needs a driver for that
    major). Both are kept so that an engine record says what it was built and validated with.
    """

    gpu_name: str
    compute_capability: str  # "9.0"
    tensorrt_version: str
    torch_cuda: str  # torch.version.cuda, "12.8"
    tensorrt_cuda_major: int | None = None  # of the installed tensorrt-cuNN wheel; None if unknown/ambiguous

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")

    @property
    def device(self) -> str:
        """The GPU model as a file-name part: H100 and H200 share sm90, but NVIDIA does not support moving
        engines (or timing caches) between device models, so each gets its own files."""
        return re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-") or "gpu"

    def engine_filename(self) -> str:
        return runs.engine_name(self.sm, self.device, self.tensorrt_version)

    def timing_cache_filename(self) -> str:
        return runs.timing_cache_name(self.sm, self.device, self.tensorrt_version)


def unavailable_reason() -> str | None:
    """Why no engine can be built or run here, or None when TensorRT starts on a visible CUDA GPU.

    Importing is not enough: a TensorRT built for another CUDA major than the driver
    supports imports, then fails to create its runtime (pybind turns the null factory
    result into a TypeError). That is probed here so ``auto`` skips TensorRT with the
    reason instead of crashing.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        return (
            f"the tensorrt package is not installed ({exc}); on a GPU host pip install 'tthf[gpu-cu12]' or "
            "'tthf[gpu-cu13]', the CUDA major of torch (tthf-doctor says which)"
        )
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is visible to PyTorch (torch.cuda.is_available() is False)"
    try:
        trt.Runtime(trt_logger())
    except Exception as exc:
        return (
            f"TensorRT {getattr(trt, '__version__', '?')} imports but cannot start on this GPU and driver "
            f"({type(exc).__name__}: {exc}); install the TensorRT build for the driver's CUDA major "
            "(run tthf-doctor to see which)"
        )
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
        torch_cuda=str(torch.version.cuda),
        tensorrt_cuda_major=probes.tensorrt_cuda_major(probes.tensorrt_distributions()),
    )


#: the real-time fixed batch is rounded up to a multiple of this many rows, so a few symbols
#: appearing during the day do not force a new batch (and a new CUDA graph) each time
FIXED_BATCH_STEP = 64

Profile = tuple[int, int, int]  # (min, opt, max) batch


def best_profile(batch: int, profiles: list[Profile]) -> int:
    """The index of the profile whose ``opt`` is nearest to ``batch`` among those that admit it."""
    fits = [i for i, (lo, _, hi) in enumerate(profiles) if lo <= batch <= hi]
    if not fits:
        raise BackendError(
            f"batch {batch} is outside every optimization profile {profiles}; rebuild the engine with "
            "tthf-export --min-batch/--max-batch covering it"
        )
    return min(fits, key=lambda i: abs(profiles[i][1] - batch))


def fixed_capacity(rows: int, profiles: list[Profile], step: int = FIXED_BATCH_STEP) -> int | None:
    """The rows of a fixed batch for ``rows`` windows: rounded up to ``step``, inside a profile; None past them all."""
    top = max(hi for _, _, hi in profiles)
    if rows > top:
        return None
    capacity = min(-(-max(rows, 1) // step) * step, top)
    return max(capacity, min(lo for lo, _, _ in profiles))


@cache
def trt_logger() -> Any:
    """The one logger of the process: TensorRT keeps a global logger and warns when another is passed."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


class TensorRTEngine:
    """A deserialized engine with one execution context; ``predict`` takes any batch size.

    Batches larger than the profiles' max are split. The optimization profile whose
    ``opt`` is nearest to the batch is selected before each run (``select_profile``, used
    by ``predict`` and by the CUDA runner alike).
    """

    def __init__(self, engine_bytes: bytes, *, source: str) -> None:
        import tensorrt as trt
        import torch

        self._runtime = trt.Runtime(trt_logger())
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
        self.output_dtypes = {
            n: torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(n)))).dtype for n in outputs
        }
        self.profiles: list[Profile] = []  # (min, opt, max) batch of each profile
        for p in range(engine.num_optimization_profiles):
            lo, opt, hi = (int(shape[0]) for shape in engine.get_tensor_profile_shape(INPUT_NAME, p))
            self.profiles.append((lo, opt, hi))
        self.max_batch = min(p[2] for p in self.profiles)
        self.window_shape = tuple(int(d) for d in engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][1:])
        self._pinned_predict = PinnedPredict(self.execute, self.output_dtypes, self.stream)

    def select_profile(self, batch: int, stream: Any) -> None:
        """Switch to the profile whose ``opt`` is nearest to ``batch`` (on ``stream``) if it is not current."""
        best = best_profile(batch, self.profiles)
        # the context's own record, not a copy: predict() and the CUDA runner share this context
        if best != self.context.active_optimization_profile:
            self.context.set_optimization_profile_async(best, stream.cuda_stream)

    def execute(self, x: Any, outs: dict[str, Any], n: int, stream: Any) -> None:
        """Enqueue one batch of ``n`` windows already in device memory on ``stream``."""
        self.select_profile(n, stream)
        self.context.set_input_shape(INPUT_NAME, (n, *x.shape[1:]))
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        for name, tensor in outs.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT execute_async_v3 failed (its log above says why)")

    def predict(self, batch: np.ndarray) -> Outputs:
        return predict_in_chunks(self._pinned_predict, batch, self.max_batch)


class TensorRTFixedBatch(FixedBatch):
    """Real time on TensorRT: one batch shape, every buffer allocated once, one stream, optionally a CUDA graph.

    Each ``run`` uploads the pinned input, executes and downloads the outputs, all
    asynchronously on ``stream``, then synchronizes once. With ``graph`` the engine's
    execution is captured once as a CUDA graph (``torch.cuda.graph`` around
    ``execute_async_v3``, TensorRT's documented way) and replayed each minute: one launch
    instead of the engine's kernels one by one. The two copies stay ordinary async copies
    on the same stream: what a graph saves is launch overhead, which copies barely have. A capture needs static shapes and addresses, which this batch has by
    construction, and one ordinary enqueue before it (TensorRT finishes shape-dependent setup
    in the first enqueue after a shape change, and that setup cannot be captured). The batch
    has its own execution context: the captured graph bakes in the context's state, which
    ``predict`` and the CUDA runner would otherwise change. Should the capture fail (TensorRT
    refuses to capture some engines), the batch runs without the graph and says why in
    ``graph_error``.
    """

    def __init__(self, compiled: TensorRTEngine, capacity: int, *, graph: bool = True) -> None:
        import torch

        self.capacity = capacity
        self.stream = torch.cuda.Stream()
        self.context = compiled.engine.create_execution_context()
        self.buffers = PinnedBuffers(capacity, compiled.window_shape, compiled.output_dtypes)
        self.inputs = self.buffers.host_in.numpy()
        self.context.set_optimization_profile_async(best_profile(capacity, compiled.profiles), self.stream.cuda_stream)
        self.context.set_input_shape(INPUT_NAME, (capacity, *compiled.window_shape))
        self.context.set_tensor_address(INPUT_NAME, self.buffers.dev_in.data_ptr())
        for name, tensor in self.buffers.dev_out.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        self._execute()  # TensorRT's deferred setup happens here, never inside a capture
        self.stream.synchronize()
        self.graph_error = ""
        self.graph = self._capture() if graph else None

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError("TensorRT execute_async_v3 failed (its log above says why)")

    def _capture(self) -> Any:
        import torch

        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                self._execute()
        except Exception as exc:  # CUDA or TensorRT refused the capture: run the ordinary enqueue instead
            self.graph_error = f"{type(exc).__name__}: {exc}"
            log.warning("TensorRT: no CUDA graph for the %d-row batch (%s); running it without", self.capacity, exc)
            torch.cuda.synchronize()
            return None
        return graph

    def run(self, n: int) -> Outputs:
        import torch

        with torch.cuda.stream(self.stream):
            self.buffers.upload(self.capacity)
            if self.graph is not None:
                self.graph.replay()  # on the current stream: this batch's
            else:
                self._execute()
            self.buffers.download(self.capacity)
        self.stream.synchronize()  # the one synchronization per call
        return self.buffers.outputs(n)


class TensorRTBackend(Backend):
    def __init__(self, engine: TensorRTEngine, *, detail: str, tensorrt_version: str) -> None:
        self.compiled = engine  # our TensorRTEngine wrapper
        self.detail = detail
        self._trt_version = tensorrt_version

    @classmethod
    def from_bytes(cls, engine_bytes: bytes, *, source: str = "engine") -> TensorRTBackend:
        target = current_target()
        return cls(
            TensorRTEngine(engine_bytes, source=source),
            detail=f"{target.gpu_name}, {source}",
            tensorrt_version=target.tensorrt_version,
        )

    @classmethod
    def from_run(  # type: ignore[override]  # it takes only the option its spec names, and says so in its type
        cls, run: runs.Run, *, rebuild: Rebuild | None = None
    ) -> TensorRTBackend:
        """The run's engine for this GPU; built with ``rebuild`` when the export has none for it."""
        target = current_target()  # BackendUnavailableError without TensorRT or a GPU
        manifest = artifacts.open_fresh(run)
        name = target.engine_filename()
        if name not in manifest.artifacts:
            built = manifest.engines()
            elsewhere = (
                f"engines exist only for {', '.join(built)}"
                if built
                else f"no engine was built ({manifest.engine.get('reason', 'unknown reason')})"
            )
            if rebuild is None:
                raise NotExportedError(
                    f"run {run.ref.name} has no TensorRT engine for {target.gpu_name} (compute "
                    f"{target.compute_capability}, TensorRT {target.tensorrt_version}): {elsewhere}; build it here "
                    f"with: tthf-export --run {run.ref.run_id} --require-engine"
                )
            log.info(
                "no engine for %s / TensorRT %s (%s); building it from the exported fp16 ONNX",
                target.sm,
                target.tensorrt_version,
                elsewhere,
            )
            rebuild(run, manifest)
        data = artifacts.read_artifact(run, manifest, name)
        return cls(
            TensorRTEngine(data, source=run.store.uri(runs.export_key(name))),
            detail=f"{target.gpu_name}, {name}",
            tensorrt_version=target.tensorrt_version,
        )

    def predict(self, batch: np.ndarray) -> Outputs:
        return self.compiled.predict(batch)

    def device_engine(self) -> DeviceEngine:
        return DeviceEngine(self.compiled.execute, dict(self.compiled.output_dtypes), max_batch=self.compiled.max_batch)

    def fixed_batch(self, rows: int) -> TensorRTFixedBatch | None:
        """Real time's all-symbols batch, replayed as a CUDA graph (``TensorRTFixedBatch``)."""
        capacity = fixed_capacity(rows, self.compiled.profiles)
        return None if capacity is None else TensorRTFixedBatch(self.compiled, capacity)

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "tensorrt": self._trt_version}


TENSORRT = TensorRTBackend.spec = BackendSpec(
    "tensorrt",
    TensorRTBackend,
    precision="fp16",
    device="cuda",
    needs=Needs(("tensorrt",), runs.FP16_ONNX),  # the engine for this GPU, built from it
    auto_rank=AutoRank(cpu=0, cuda=0),  # the fastest wherever it runs
    options=("rebuild",),
)

"""OpenVINO as a CPU backend: the exported fp32 ``model.onnx`` compiled by OpenVINO's CPU plugin.

Two names, two precisions (a different precision is a different backend name, so it is
in the manifest and in tthf-run's settings key, never silent):

- ``openvino``: fp32 (``INFERENCE_PRECISION_HINT=f32``), validated at the fp32 tolerances;
- ``openvino-bf16``: the same graph with bf16 matmuls, an optional variant: served only when
  ``tthf-export`` accepted it at the bf16 bar (a rejected or never validated variant is a
  one-line error with the fix), and only on CPUs with native bf16 (AVX-512 BF16 or AMX):
  elsewhere OpenVINO would quietly run f32 under the bf16 name, so that is
  ``BackendUnavailableError``;
- ``openvino-int8``: the int8 IR that ``tthf-export --int8`` quantizes from ``model.onnx``
  (``tthf.export.int8``: int8 matmuls, the rest fp32), an optional variant like bf16. It runs
  on every CPU OpenVINO supports (VNNI or AMX make it fast; ``tthf-doctor`` says which).

Configuration, by measurement on the project's shared 2-core machine (bench/tune_openvino.py,
docs/export.md "OpenVINO"), the same shape as the ONNX Runtime backend's: data parallel.
``PERFORMANCE_HINT=THROUGHPUT`` with one single-threaded stream per core; a batch larger
than ``SUB_BATCH`` windows is cut into sub-batches of at most ``SUB_BATCH`` that an
``AsyncInferQueue`` (one infer request per stream) runs side by side; a smaller batch is
one synchronous request on one stream. One stream with every core as its threads (the
LATENCY hint) measured slower at batch 1000 and 4096 on the loaded machine: the model's ops
are too small for intra-op threads to pay for their synchronisation.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from tthf.engine import artifacts
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import INPUT_NAME, Outputs, empty_outputs, predict_in_chunks
from tthf.engine.runs import FP32_ONNX, INT8_BIN, INT8_XML, Run
from tthf.engine.runtime.backends.base import (
    AutoRank,
    Backend,
    BackendSpec,
    Needs,
    exported_onnx,
    split_batch,
    write_outputs,
)
from tthf.errors import BackendUnavailableError, UsageError

#: tthf precision name -> OpenVINO's INFERENCE_PRECISION_HINT
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the IR's quantized ops, the rest f32
#: windows per infer call for large batches (measured best of 64..1024, bench/tune_openvino.py)
SUB_BATCH = 128


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(
            "openvino is not installed; pip install 'tthf[cpu]', or use --backend onnxruntime or torch"
        ) from exc
    return openvino


def bf16_unavailable_reason(core: Any) -> str | None:
    """Why this CPU cannot run bf16 natively (None when it can), from OpenVINO's own capability list."""
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" in capabilities:
        return None
    return (
        f"this CPU ({core.get_property('CPU', 'FULL_DEVICE_NAME')}) has no native bf16 (AVX-512 BF16 or AMX): "
        f"OpenVINO reports {capabilities}; use --backend openvino (fp32)"
    )


class OpenVinoBackend(Backend):
    """``model.onnx`` compiled for the CPU at its spec's ``precision`` (``fp32`` or ``bf16``)."""

    def __init__(
        self,
        model: bytes,
        *,
        weights: bytes = b"",
        threads: int | None = None,
        hint: str = "THROUGHPUT",
        streams: int | None = None,
        sub_batch: int = SUB_BATCH,
    ) -> None:
        ov = _import_openvino()
        if sub_batch < 1:
            raise UsageError(f"sub_batch must be >= 1, got {sub_batch}")
        core = ov.Core()
        if self.precision == "bf16" and (reason := bf16_unavailable_reason(core)):
            raise BackendUnavailableError(f"{self.name}: {reason}")
        threads = threads or len(os.sched_getaffinity(0))
        streams = streams or threads
        config = {
            "PERFORMANCE_HINT": hint,
            "NUM_STREAMS": streams,
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": PRECISIONS[self.precision],
        }
        self._ov = ov
        self.compiled = core.compile_model(core.read_model(model, weights), "CPU", config)
        self._check_precision()
        self._ports = [self.compiled.output(name) for name in OUTPUT_NAMES]
        self.request = self.compiled.create_infer_request()
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.queue = ov.AsyncInferQueue(self.compiled, self.streams) if self.streams > 1 else None
        if self.queue is not None:
            self.queue.set_callback(self._collect)
        self.sub_batch = sub_batch
        self._lock = threading.Lock()  # one request (or queue) per backend: one predict at a time
        self.detail = (
            f"CPU, {self.precision}, {hint}, {self.streams} stream(s), "
            f"{self.compiled.get_property('INFERENCE_NUM_THREADS')} thread(s)"
        )

    def _check_precision(self) -> None:
        """The compiled model runs at the precision it is named for (OpenVINO falls back silently)."""
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        if got != getattr(self._ov.Type, PRECISIONS[self.precision]):
            raise BackendUnavailableError(
                f"{self.name}: OpenVINO compiled the model at {got.get_type_name()}, not "
                f"{PRECISIONS[self.precision]}; this CPU cannot run {self.precision}"
            )

    @classmethod
    def from_onnx(cls, model: bytes) -> OpenVinoBackend:
        return cls(model)

    @classmethod
    def from_run(cls, run: Run, **options: Any) -> OpenVinoBackend:
        """The run's exported fp32 ``model.onnx``, after checking the export is fresh."""
        _import_openvino()  # an absent openvino is "unavailable" (auto skips it), not a stale export
        return cls(exported_onnx(run, variant=cls.spec.name if cls.spec.optional else None), **options)

    def predict(self, batch: np.ndarray) -> Outputs:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            if self.queue is None or len(x) <= self.sub_batch:
                return predict_in_chunks(self._predict_chunk, x, self.sub_batch)
            return self._predict_streams(x)

    def _predict_chunk(self, x: np.ndarray) -> Outputs:
        # Shared memory both ways (measured ~0.1 ms less per call at batch 1); the outputs are
        # the request's buffers, so they are copied before the next call reuses them.
        result = self.request.infer({INPUT_NAME: x}, share_inputs=True, share_outputs=True)
        return {name: np.array(result[port], dtype=np.float32) for name, port in zip(OUTPUT_NAMES, self._ports)}

    def _predict_streams(self, x: np.ndarray) -> Outputs:
        """Sub-batches over the streams' infer requests (the CPU plugin runs each stream on its own cores).

        The queue hands each sub-batch to the next free request, so a stream whose core is
        taken by another job does fewer of them.
        """
        assert self.queue is not None
        out = empty_outputs(len(x))
        for shard in split_batch(len(x), self.streams, self.sub_batch):
            for part in shard:
                self.queue.start_async({INPUT_NAME: x[part]}, userdata=(out, part), share_inputs=True)
        self.queue.wait_all()
        return out

    def _collect(self, request: Any, userdata: tuple[Outputs, slice]) -> None:
        out, part = userdata
        write_outputs(out, part, {name: request.get_tensor(port).data for name, port in zip(OUTPUT_NAMES, self._ports)})

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "openvino": self._ov.get_version()}


class OpenVinoBf16Backend(OpenVinoBackend):
    """The bf16 variant: optional (validated at the bf16 bar, served only when accepted), never picked by ``auto``."""


class OpenVinoInt8Backend(OpenVinoBackend):
    """The int8 variant: ``tthf-export --int8``'s IR (``model_int8.xml`` + ``.bin``), optional, never picked by ``auto``."""

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> OpenVinoInt8Backend:
        return cls(files[INT8_XML], weights=files[INT8_BIN])

    @classmethod
    def from_run(cls, run: Run, **options: Any) -> OpenVinoInt8Backend:
        """The run's exported int8 IR, after checking the export is fresh and accepted the variant."""
        _import_openvino()
        manifest = artifacts.open_fresh(run)
        artifacts.check_variant(run, manifest, cls.spec.name)
        files = {name: artifacts.read_artifact(run, manifest, name) for name in (INT8_XML, INT8_BIN)}
        return cls(files[INT8_XML], weights=files[INT8_BIN], **options)


OPENVINO = OpenVinoBackend.spec = BackendSpec(
    "openvino",
    OpenVinoBackend,
    precision="fp32",
    device="cpu",
    needs=Needs(("openvino",), FP32_ONNX),
    # faster than ONNX Runtime's CPU sessions at tthf-run's batch sizes (docs/export.md, "OpenVINO");
    # on a CUDA host after ONNX Runtime, which then runs on the GPU
    auto_rank=AutoRank(cpu=1, cuda=2),
    options=("threads",),
)
OPENVINO_BF16 = OpenVinoBf16Backend.spec = BackendSpec(
    "openvino-bf16",
    OpenVinoBf16Backend,
    precision="bf16",
    device="cpu",
    needs=Needs(("openvino",), FP32_ONNX),
    optional=True,  # auto picks it on the CPU only when the export opted in (--auto-precision bf16)
    options=("threads",),
)
OPENVINO_INT8 = OpenVinoInt8Backend.spec = BackendSpec(
    "openvino-int8",
    OpenVinoInt8Backend,
    precision="int8",
    device="cpu",
    needs=Needs(("openvino",), INT8_XML),
    optional=True,  # built only by tthf-export --int8; auto picks it only when the export opted in (--auto-precision int8)
    options=("threads",),
)

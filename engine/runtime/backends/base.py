"""What every inference backend provides: ``predict`` on host batches, and optionally a device engine.

A backend maps (B, seq_len, F) float32 scaled windows to the four outputs. The CUDA
runner (``tthf.engine.runtime.runner``) asks a backend for its ``device_engine()``: how
to run a batch that already sits in device memory, enqueued on a given stream. A
backend that runs on the host returns None and is served by ordinary host buffers.

The two CPU backends that run the exported ``model.onnx`` (ONNX Runtime, OpenVINO) share
how they get it (``exported_onnx``) and how they split a batch over their single-threaded
engines (``split_batch``, ``write_outputs``); each keeps its own way of running the parts.

A backend is described by one value, its ``BackendSpec`` (name, class, precision, device,
what it needs, where ``auto`` ranks it, whether it is an optional variant, which opening
options it takes), declared in the backend's file next to its class. Everything else reads
the specs: ``open_backend`` and ``auto`` (``tthf.engine.runtime.backends``), the export's
validation (``tthf.export.api``) and ``tthf-doctor``; no other code names a backend.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from tthf.engine import artifacts
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import Outputs
from tthf.engine.runs import FP32_ONNX, Run
from tthf.engine.runtime.pinned import Execute

#: where a backend runs: "cpu" runs on any host (a GPU build of its library may still take the
#: GPU: ONNX Runtime's); "cuda" needs a CUDA device
Device = Literal["cpu", "cuda"]
#: the opening options a backend may take (``OpenOptions``)
Option = Literal["threads", "rebuild"]
#: builds, validates and records the engine for this host from the run's fp16 ONNX; returns its file name
Rebuild = Callable[[Run, artifacts.Manifest], str]


@dataclass(frozen=True)
class OpenOptions:
    """What a caller may ask of the backend it opens; each backend takes those its spec lists.

    ``threads``: the CPU engines' threads (default: every core this process may use);
    ``rebuild``: builds a TensorRT engine missing for this GPU (``tthf.export.rebuild_engine``);
    without it a run exported elsewhere is refused with the command that builds the engine.
    """

    threads: int | None = None
    rebuild: Rebuild | None = None


@dataclass(frozen=True)
class Needs:
    """What must be there for a backend to open: ``packages`` that import, and the exported file it
    serves or is built from (``artifact``; None: the checkpoint, no export needed)."""

    packages: tuple[str, ...] = ()
    artifact: str | None = None


@dataclass(frozen=True)
class AutoRank:
    """Where ``auto`` tries a backend, lower first: on a host without CUDA and on a host with it."""

    cpu: int
    cuda: int

    def on(self, cuda: bool) -> int:
        return self.cuda if cuda else self.cpu


@dataclass(frozen=True)
class BackendSpec:
    """One backend, as everything outside its file knows it.

    - ``precision``: the arithmetic of its matrix products, which decides the bar export
      validates it at and goes into the run's settings key (a different precision is a
      different name, never silent);
    - ``auto_rank``: None: ``auto`` never picks it;
    - ``optional``: a variant (a reduced CPU precision of ``model.onnx``): ``tthf-export``
      validates it against its own bar and records it accepted or rejected without failing
      the export; it is served only when accepted: when named, or by ``auto`` on a CPU host
      when the export opted into its precision (``--auto-precision``, the manifest's ``auto_precision``);
    - ``options``: which of ``OpenOptions`` its ``from_run`` takes;
    - ``also_validates``: (file, precision) of exported files besides ``needs.artifact`` that
      export checks through it (ONNX Runtime, the reference ONNX runtime, checks
      ``model_fp16.onnx``, TensorRT's source, at fp16).

    Declared next to the class as ``NAME = Cls.spec = BackendSpec("name", Cls, ...)``, so an
    opened backend knows its own name and precision.
    """

    name: str
    cls: type[Backend]
    precision: str
    device: Device
    needs: Needs
    auto_rank: AutoRank | None = None
    optional: bool = False
    options: tuple[Option, ...] = ()
    also_validates: tuple[tuple[str, str], ...] = ()

    def open(self, run: Run, options: OpenOptions | None = None) -> Backend:
        """This backend for ``run``, given the options it takes (the others are not its business)."""
        given = options or OpenOptions()
        return self.cls.from_run(run, **{name: getattr(given, name) for name in self.options})


@dataclass
class DeviceEngine:
    """How one backend runs a batch that already sits in device memory.

    ``stream``: the one CUDA stream this engine can enqueue on, when it is fixed at load time
    (ONNX Runtime takes its compute stream as a session option). The runner then uses it as
    its compute stream, so the engine's work is ordered with the ring's events like any other
    kernel. None: the engine enqueues on whatever stream ``execute`` is given.
    """

    execute: Execute
    out_dtypes: dict[str, Any]  # torch dtypes of the device outputs
    max_batch: int | None = None
    stream: Any = None  # torch.cuda.Stream


class FixedBatch(ABC):
    """A batch of fixed ``capacity`` rows run again and again: real time's all-symbols batch, once a minute.

    The caller writes ``n`` windows into the first rows of ``inputs`` (host memory the batch
    owns: pinned on a GPU) and calls ``run(n)``. Rows past ``n`` are run too and ignored, so
    every call has the same shape and the same addresses: what lets a GPU backend allocate
    everything once, keep one stream, and replay a captured CUDA graph each minute.
    """

    capacity: int
    inputs: np.ndarray  # (capacity, seq_len, F) float32

    @abstractmethod
    def run(self, n: int) -> Outputs:
        """The outputs of rows ``[:n]`` of ``inputs``, as new host arrays."""


class Backend(ABC):
    """A loaded model that maps (B, seq_len, F) float32 scaled windows to the four outputs."""

    #: what this backend is (``BackendSpec``), declared next to the class
    spec: ClassVar[BackendSpec]
    detail: str  # device / provider, for logs and manifests

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def precision(self) -> str:
        return self.spec.precision

    @classmethod
    def from_run(cls, run: Run, **options: Any) -> Backend:
        """This backend on ``run``'s checkpoint or export (``BackendSpec.open`` passes the options it takes)."""
        raise NotImplementedError(f"the {cls.spec.name} backend does not open runs")

    @classmethod
    def from_onnx(cls, model: bytes) -> Backend:
        """This backend on ``model.onnx`` bytes, as export validates it (backends that run ONNX override it)."""
        raise NotImplementedError(f"the {cls.spec.name} backend does not run ONNX bytes")

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> Backend:
        """This backend on the export's files in memory (name -> bytes), as export validates a variant:
        by default ``from_onnx`` on the file its spec needs."""
        artifact = cls.spec.needs.artifact
        assert artifact is not None, f"{cls.spec.name} serves no exported file"
        return cls.from_onnx(files[artifact])

    @abstractmethod
    def predict(self, batch: np.ndarray) -> Outputs:
        """``batch`` (B, seq_len, F) float32 -> {name: (B,) float32} for every name in OUTPUT_NAMES."""

    def device_engine(self) -> DeviceEngine | None:
        """The engine the CUDA runner drives, or None for a backend that runs on the host."""
        return None

    def fixed_batch(self, rows: int) -> FixedBatch | None:
        """A ``FixedBatch`` for at least ``rows`` rows, or None: the caller then uses ``predict`` (CPU backends)."""
        return None

    def versions(self) -> dict[str, str]:
        return {"backend": f"{self.name} ({self.detail})"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail})"


def exported_onnx(run: Run, *, variant: str | None = None) -> bytes:
    """The run's exported fp32 ``model.onnx``, after checking the export is fresh (else StaleArtifactError)
    and, for an optional ``variant`` (a backend name), that export accepted it."""
    manifest = artifacts.open_fresh(run)
    if variant is not None:
        artifacts.check_variant(run, manifest, variant)
    return artifacts.read_artifact(run, manifest, FP32_ONNX)


def split_batch(n: int, shards: int, sub_batch: int, min_shard: int = 1) -> list[list[slice]]:
    """How ``n`` windows run data parallel: contiguous shards, each a list of sub-batches.

    At most ``shards`` shards (one per single-threaded engine), each of at least
    ``min_shard`` windows where ``n`` allows, cut into sub-batches of at most ``sub_batch``
    (per-window throughput falls once a call's activations outgrow the caches;
    docs/export.md, "CPU inference speed"). Every window's outputs depend on that window
    only, so the split changes no number.
    """
    count = max(1, min(shards, n // max(1, min_shard)))
    bounds = [int(b) for b in np.linspace(0, n, count + 1)]
    return [
        [slice(a, min(a + sub_batch, hi)) for a in range(lo, hi, sub_batch)] for lo, hi in itertools.pairwise(bounds)
    ]


def write_outputs(out: Outputs, at: slice, part: Outputs) -> None:
    """One sub-batch's outputs into the whole batch's arrays (``empty_outputs``), where it came from."""
    for name in OUTPUT_NAMES:
        out[name][at] = part[name]

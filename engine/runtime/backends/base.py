"""What every inference backend provides: ``predict`` on host batches, and optionally a device engine.

A backend maps (B, seq_len, F) float32 scaled windows to the four outputs. The CUDA
runner (``tthf.engine.runtime.runner``) asks a backend for its ``device_engine()``: how
to run a batch that already sits in device memory, enqueued on a given stream. A
backend that runs on the host returns None and is served by ordinary host buffers.

The two CPU backends that run the exported ``model.onnx`` (ONNX Runtime, OpenVINO) share
how they get it (``exported_onnx``) and how they split a batch over their single-threaded
engines (``split_batch``, ``write_outputs``); each keeps its own way of running the parts.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tthf.engine import artifacts
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import Outputs
from tthf.engine.runs import FP32_ONNX, Run

#: ``execute(x_dev (n, seq, F), outs_dev {name: (n,)}, n, stream)``, enqueued on ``stream``
Execute = Callable[[Any, dict[str, Any], int, Any], None]


@dataclass
class DeviceEngine:
    """How one backend runs a batch that already sits in device memory."""

    execute: Execute
    out_dtypes: dict[str, Any]  # torch dtypes of the device outputs
    max_batch: int | None = None
    synchronous: bool = False  # runs on its own stream and returns when done (ONNX Runtime)


class Backend(ABC):
    """A loaded model that maps (B, seq_len, F) float32 scaled windows to the four outputs."""

    name: str
    detail: str  # device / provider, for logs and manifests

    @abstractmethod
    def predict(self, batch: np.ndarray) -> Outputs:
        """``batch`` (B, seq_len, F) float32 -> {name: (B,) float32} for every name in OUTPUT_NAMES."""

    def device_engine(self) -> DeviceEngine | None:
        """The engine the CUDA runner drives, or None for a backend that runs on the host."""
        return None

    def versions(self) -> dict[str, str]:
        return {"backend": f"{self.name} ({self.detail})"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail})"


def exported_onnx(run: Run) -> bytes:
    """The run's exported fp32 ``model.onnx``, after checking the export is fresh (else StaleArtifactError)."""
    return artifacts.read_artifact(run, artifacts.open_fresh(run), FP32_ONNX)


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

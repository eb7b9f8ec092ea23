"""What every inference backend provides: ``predict`` on host batches, and optionally a device engine.

A backend maps (B, seq_len, F) float32 scaled windows to the four outputs. The CUDA
runner (``tthf.engine.runtime.runner``) asks a backend for its ``device_engine()``: how
to run a batch that already sits in device memory, enqueued on a given stream. A
backend that runs on the host returns None and is served by ordinary host buffers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tthf.engine.model.interface import Outputs

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

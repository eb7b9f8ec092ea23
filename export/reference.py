"""The fp32 reference every exported artifact and reduced-precision variant is judged against.

A run tthf trained: its PyTorch network, fp32 on the CPU. An imported run has no tthf network:
its reference is the validated imported graph through ONNX Runtime on the CPU (``tthf-import``
checked that graph against the user's own model).
"""

from __future__ import annotations

from tthf.engine import runs
from tthf.engine.runtime.backends import OnnxRuntimeBackend, TorchBackend
from tthf.engine.runtime.backends.base import Backend


def reference_backend(run: runs.Run) -> Backend:
    """The run's fp32 reference backend (see the module doc)."""
    if run.config.imported is not None:
        return OnnxRuntimeBackend.from_onnx(run.read_bytes(runs.IMPORTED_MODEL))
    return TorchBackend(run.load_model(), device="cpu")

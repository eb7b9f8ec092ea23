"""The backend an explanation runs a model through: the run's fastest validated one, as tthf-run picks it.

An exported run gets ``open_backend(run, "auto")``. A run without an export gets its fp32
reference: tthf's network in PyTorch, or an import's ``model.onnx`` in ONNX Runtime (``auto``
would refuse an unexported import, whose only PyTorch-free form is that graph).
"""

from __future__ import annotations

from tthf.engine import artifacts, runs
from tthf.engine.runtime.backends import Backend, open_backend
from tthf.engine.runtime.backends.onnxruntime import OnnxRuntimeBackend


def serving_backend(run: runs.Run) -> Backend:
    if run.config.imported is not None and not artifacts.is_exported(run):
        return OnnxRuntimeBackend.from_onnx(run.read_bytes(runs.IMPORTED_MODEL))
    return open_backend(run, "auto")

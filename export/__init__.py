"""Export a run's checkpoint to ONNX and TensorRT, validated against the PyTorch reference.

``export_run(run, ExportConfig())`` is ``tthf-export``; ``rebuild_engine`` is the action
the TensorRT backend is given to build an engine for a new GPU. Both load lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExportConfig": "tthf.export.config",
    "export_run": "tthf.export.api",
    "rebuild_engine": "tthf.export.api",
    "ExportResult": "tthf.export.api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tthf.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

"""Export a run's checkpoint to ONNX and TensorRT, validated against the PyTorch reference.

``export_run(run, ExportConfig())`` is ``tthf-export``; ``rebuild_engine`` is the action
the TensorRT backend is given to build an engine for a new GPU. Both load lazily.
"""

from __future__ import annotations

from tthf._lazy import lazy_exports

_EXPORTS = {
    "ExportConfig": "tthf.export.config",
    "export_run": "tthf.export.api",
    "rebuild_engine": "tthf.export.api",
    "ExportResult": "tthf.export.api",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("tthf.export", _EXPORTS, globals())

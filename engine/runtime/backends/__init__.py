"""Inference backends behind one interface (``Backend``), one file each, and how a run opens one.

- ``torch`` (``torch.py``): the PyTorch reference from the checkpoint, fp32 on the CPU;
  ``torch-cuda``: the same on a GPU under fp16 autocast.
- ``onnxruntime`` (``onnxruntime.py``): the exported fp32 ``model.onnx`` with the best
  provider present.
- ``openvino`` (``openvino.py``): the exported fp32 ``model.onnx`` compiled by OpenVINO for
  the CPU; ``openvino-bf16``: the same with bf16 matmuls, on CPUs with native bf16 only
  (explicit: ``auto`` never picks a reduced precision on the CPU).
- ``tensorrt`` (``tensorrt.py``): the native fp16 engine for this host's GPU.
- ``auto``: the fastest that can run here, in ``AUTO_ORDER`` (docs/export.md has the
  measurements behind the order), and it says which; without an export, torch-cuda on
  a GPU host, else torch.

Every exported artifact is checked against ``export/manifest.json`` first: an export
made from another checkpoint, config or scalers, or an artifact whose bytes changed, is
a ``StaleArtifactError`` that says to re-export. Adding a backend is one file here and
one line in ``REGISTRY``.
"""

from __future__ import annotations

import logging
from typing import Any

from tthf.engine import artifacts
from tthf.engine.runs import Run
from tthf.engine.runtime.backends.base import Backend, DeviceEngine
from tthf.engine.runtime.backends.onnxruntime import OnnxRuntimeBackend
from tthf.engine.runtime.backends.openvino import OpenVinoBackend, OpenVinoBf16Backend
from tthf.engine.runtime.backends.tensorrt import Rebuild, TensorRTBackend
from tthf.engine.runtime.backends.torch import TorchBackend, TorchCudaBackend
from tthf.errors import BackendUnavailableError, UsageError

log = logging.getLogger("tthf")

#: name -> backend class (each has ``from_run(run, **options)``)
REGISTRY: dict[str, type[Any]] = {
    "tensorrt": TensorRTBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVinoBackend,
    "openvino-bf16": OpenVinoBf16Backend,
    "torch": TorchBackend,
    "torch-cuda": TorchCudaBackend,
}
#: what ``auto`` tries, fastest first; torch is the fallback that always runs. OpenVINO (CPU
#: only) measured faster than ONNX Runtime's CPU sessions at tthf-run's batch sizes (1000,
#: 4096; docs/export.md "OpenVINO"); on a CUDA host ONNX Runtime (on the GPU) goes first.
AUTO_ORDER = ("tensorrt", "openvino", "onnxruntime")
AUTO_ORDER_CUDA = ("tensorrt", "onnxruntime", "openvino")
BACKENDS = ("auto", *REGISTRY)

__all__ = [
    "BACKENDS",
    "Backend",
    "DeviceEngine",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "OpenVinoBf16Backend",
    "TensorRTBackend",
    "TorchBackend",
    "TorchCudaBackend",
    "open_backend",
]


def _fallback(run: Run) -> Backend:
    """What auto uses without a faster backend: the network on the GPU when there is one, else the CPU reference."""
    import torch

    return (TorchCudaBackend if torch.cuda.is_available() else TorchBackend).from_run(run)


def _options(name: str, threads: int | None, rebuild: Rebuild | None) -> dict[str, Any]:
    if name in ("onnxruntime", "openvino", "openvino-bf16"):
        return {"threads": threads}
    if name == "tensorrt":
        return {"rebuild": rebuild}
    return {}


def open_backend(run: Run, name: str, *, threads: int | None = None, rebuild: Rebuild | None = None) -> Backend:
    """Open backend ``name`` (one of ``BACKENDS``) for ``run``; ``auto`` logs what it picked and why.

    ``rebuild`` builds a missing TensorRT engine for this GPU (pass ``tthf.export.rebuild_engine``);
    without it a run exported elsewhere is refused with the command that builds the engine.
    """
    if name in REGISTRY:
        backend: Backend = REGISTRY[name].from_run(run, **_options(name, threads, rebuild))
        return backend
    if name != "auto":
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if not artifacts.is_exported(run):
        fallback = _fallback(run)
        log.warning(
            "backend auto: run %s has no export, using %s; run tthf-export --run %s for faster inference",
            run.ref.name,
            fallback.name,
            run.ref.run_id,
        )
        return fallback
    import torch

    skipped = []
    for candidate in AUTO_ORDER_CUDA if torch.cuda.is_available() else AUTO_ORDER:
        try:
            backend = open_backend(run, candidate, threads=threads, rebuild=rebuild)
        except BackendUnavailableError as exc:  # stale exports are not skipped: they are errors
            skipped.append(f"{candidate}: {exc}")
            continue
        log.info(
            "backend auto: using %s (%s)%s",
            backend.name,
            backend.detail,
            f"; skipped {'; '.join(skipped)}" if skipped else "",
        )
        return backend
    fallback = _fallback(run)
    log.info("backend auto: using %s; skipped %s", fallback.name, "; ".join(skipped))
    return fallback

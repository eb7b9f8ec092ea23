"""Inference backends behind one interface (``Backend``), one file each, and how a run opens one.

- ``torch`` (``torch.py``): the PyTorch reference from the checkpoint, fp32 on the CPU;
  ``torch-cuda``: the same on a GPU under fp16 autocast.
- ``onnxruntime`` (``onnxruntime.py``): the exported fp32 ``model.onnx`` with the best
  provider present.
- ``openvino`` (``openvino.py``): the exported fp32 ``model.onnx`` compiled by OpenVINO for
  the CPU; ``openvino-bf16``: the same with bf16 matmuls, on CPUs with native bf16 only
  (explicit: ``auto`` never picks a reduced precision on the CPU); ``openvino-int8``: the int8
  IR that ``tthf-export --int8`` quantizes from it (explicit likewise).
- ``tensorrt`` (``tensorrt.py``): the native fp16 engine for this host's GPU.
- ``auto``: the fastest that can run here, in the order of the specs' ``auto_rank``
  (docs/export.md has the measurements behind it), and it says which; without an export,
  or when none of those can run, the backend that needs no export on this host's device
  (torch-cuda on a GPU host, else torch). ``auto`` computes at fp32 on a CPU host unless the
  run's export opted in to a reduced precision (``tthf-export --auto-precision bf16|int8``,
  recorded as the export manifest's ``auto_precision``): then, on a host without CUDA, it tries
  the accepted variants of that precision first, and falls back to the fp32 order when none
  is accepted or runs here (saying why).

Every exported artifact is checked against ``export/manifest.json`` first: an export
made from another checkpoint, config or scalers, or an artifact whose bytes changed, is
a ``StaleArtifactError`` that says to re-export.

Adding a backend is one file here, holding its class and its ``BackendSpec`` (declared
next to the class), and one line in ``REGISTRY``: ``auto``, ``tthf-export``'s validation
and ``tthf-doctor`` read the specs, and nothing else names a backend.
"""

from __future__ import annotations

import logging

from tthf.engine import artifacts
from tthf.engine.runs import Run
from tthf.engine.runtime.backends.base import Backend, BackendSpec, DeviceEngine, OpenOptions, Rebuild
from tthf.engine.runtime.backends.onnxruntime import ONNXRUNTIME, OnnxRuntimeBackend
from tthf.engine.runtime.backends.openvino import (
    OPENVINO,
    OPENVINO_BF16,
    OPENVINO_INT8,
    OpenVinoBackend,
    OpenVinoBf16Backend,
    OpenVinoInt8Backend,
)
from tthf.engine.runtime.backends.tensorrt import TENSORRT, TensorRTBackend
from tthf.engine.runtime.backends.torch import TORCH, TORCH_CUDA, TorchBackend, TorchCudaBackend
from tthf.errors import BackendUnavailableError, RejectedVariantError, UsageError

log = logging.getLogger("tthf")

#: every backend by name, in the order tthf-run's --backend lists them
REGISTRY: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        TENSORRT,
        ONNXRUNTIME,
        OPENVINO,
        OPENVINO_BF16,
        OPENVINO_INT8,
        TORCH,
        TORCH_CUDA,
    )
}
BACKENDS = ("auto", *REGISTRY)

__all__ = [
    "BACKENDS",
    "REGISTRY",
    "Backend",
    "BackendSpec",
    "DeviceEngine",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "OpenVinoBf16Backend",
    "OpenVinoInt8Backend",
    "TensorRTBackend",
    "TorchBackend",
    "TorchCudaBackend",
    "auto_order",
    "fallback",
    "open_backend",
    "opted_in",
]


def auto_order(cuda: bool) -> list[BackendSpec]:
    """What ``auto`` tries before its fallback, fastest first, on a host with (``cuda``) or without CUDA."""
    ranked = [(rank.on(cuda), spec) for spec in REGISTRY.values() if (rank := spec.auto_rank) is not None]
    return [spec for _, spec in sorted(ranked, key=lambda pair: pair[0])]


def opted_in(run: Run, cuda: bool) -> list[BackendSpec]:
    """The optional variants ``auto`` tries before ``auto_order``: on a host without CUDA, those of the
    precision the run's export opted into (its manifest's ``auto_precision``); none otherwise."""
    precision = artifacts.Manifest.read(run).auto_precision
    if cuda or precision == "fp32":
        return []
    return [spec for spec in REGISTRY.values() if spec.optional and spec.precision == precision]


def fallback(cuda: bool) -> BackendSpec:
    """What ``auto`` uses without a faster backend: the one that needs no export, on the GPU when there is one."""
    device = "cuda" if cuda else "cpu"
    return next(spec for spec in REGISTRY.values() if spec.needs.artifact is None and spec.device == device)


def _fallback(run: Run, options: OpenOptions) -> Backend:
    import torch

    return fallback(torch.cuda.is_available()).open(run, options)


def open_backend(run: Run, name: str, *, threads: int | None = None, rebuild: Rebuild | None = None) -> Backend:
    """Open backend ``name`` (one of ``BACKENDS``) for ``run``; ``auto`` logs what it picked and why.

    ``threads`` and ``rebuild`` (``OpenOptions``) go to the backends that take them.
    """
    options = OpenOptions(threads=threads, rebuild=rebuild)
    if name in REGISTRY:
        return REGISTRY[name].open(run, options)
    if name != "auto":
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(('auto', *REGISTRY))}")
    if not artifacts.is_exported(run):
        backend = _fallback(run, options)
        log.warning(
            "backend auto: run %s has no export, using %s; run tthf-export --run %s for faster inference",
            run.ref.name,
            backend.name,
            run.ref.run_id,
        )
        return backend
    import torch

    skipped = []
    cuda = torch.cuda.is_available()
    for spec in [*opted_in(run, cuda), *auto_order(cuda)]:
        try:
            backend = spec.open(run, options)
        except (BackendUnavailableError, RejectedVariantError) as exc:  # stale exports are errors, not skipped
            skipped.append(f"{spec.name}: {exc}")
            continue
        log.info(
            "backend auto: using %s (%s)%s",
            backend.name,
            backend.detail,
            f"; skipped {'; '.join(skipped)}" if skipped else "",
        )
        return backend
    backend = _fallback(run, options)
    log.info("backend auto: using %s; skipped %s", backend.name, "; ".join(skipped))
    return backend

"""What an engine records about the host it was built on (finding 22 in docs/gpu-audit-status.md), tested on the CPU.

``GpuTarget`` goes into the export manifest with every engine. Its two CUDA versions come
from different places: torch's from ``torch.version.cuda``, TensorRT's from the name of the
installed ``tensorrt-cuNN`` wheel (``tensorrt.__version__`` does not say which CUDA it was
built for). The parsing is pure and tested here; ``current_target`` is tested with a
stand-in ``tensorrt`` module and a patched torch, since this host has neither TensorRT nor a GPU.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

from tthf.engine.runtime import probes
from tthf.engine.runtime.backends import tensorrt as trt_backend


@pytest.mark.parametrize(
    ("dists", "major"),
    [
        (["tensorrt-cu12==11.4.0.106", "tensorrt-cu12-bindings==11.4.0.106", "tensorrt-cu12-libs==11.4.0.106"], 12),
        (["tensorrt==11.4.0.106", "tensorrt-cu13==11.4.0.106", "tensorrt-cu13-libs==11.4.0.106"], 13),
        (["tensorrt==10.13.0"], None),  # the meta-package alone names no CUDA
        ([], None),
        (["tensorrt-cu12==11.4.0.106", "tensorrt-cu13==11.4.0.106"], None),  # two majors: ambiguous
    ],
)
def test_tensorrt_cuda_major_from_the_wheel_names(dists: list[str], major: int | None) -> None:
    assert probes.tensorrt_cuda_major(dists) == major


def test_two_majors_are_both_reported() -> None:
    assert probes.tensorrt_cuda_majors(["tensorrt-cu12==11.4", "tensorrt-cu13-libs==11.4"]) == {12, 13}


def _stand_in_tensorrt() -> types.ModuleType:
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "11.4.0.106"

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    fake.Logger = Logger
    fake.Runtime = lambda logger: object()
    return fake


def test_current_target_records_torch_and_tensorrt_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _stand_in_tensorrt())
    trt_backend.trt_logger.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(
        probes, "tensorrt_distributions", lambda: ["tensorrt-cu13==11.4.0.106", "tensorrt-cu13-libs==11.4.0.106"]
    )
    try:
        target = trt_backend.current_target()
    finally:
        trt_backend.trt_logger.cache_clear()
    assert target.torch_cuda == "12.8" and target.tensorrt_cuda_major == 13
    # the manifest's engine record is the target's fields (export/api.py); both CUDA versions are in it
    record = target.__dict__
    assert record["torch_cuda"] == "12.8" and record["tensorrt_cuda_major"] == 13
    assert "cuda_version" not in record  # the old, ambiguous name (it was torch's)
    assert target.engine_filename() == "model_fp16.sm90.nvidia-h200.trt11.4.0.106.engine"


def test_a_target_without_a_known_tensorrt_cuda_major_still_names_its_engine() -> None:
    target = trt_backend.GpuTarget("NVIDIA H200", "9.0", "11.4.0.106", "12.8")
    assert target.tensorrt_cuda_major is None and target.sm == "sm90"

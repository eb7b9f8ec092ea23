"""What this host has, found by asking each layer directly: CPU flags, driver, torch, TensorRT, ONNX Runtime.

``tthf-doctor`` (``tthf.engine.runtime.doctor``) judges these facts; this module only
collects them, and never raises for a missing or broken library: that is a fact too. Each
probe asks the layer itself rather than trusting a neighbour, because the GPU path fails
exactly where two layers disagree: the driver sees a GPU that a CPU build of torch does
not, TensorRT imports but cannot start CUDA, ONNX Runtime lists the CUDA provider and then
quietly runs the session on the CPU. So the ONNX Runtime probe creates a real session per
provider (a tiny MatMul model built with ``onnx.helper``, which needs cuBLAS on CUDA) and
reads back which provider the session really got.

Every GPU library is imported inside the probe, so this module imports on any machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: label -> /proc/cpuinfo flag
CPU_FEATURES = {
    "AVX2": "avx2",
    "AVX-512": "avx512f",
    "AVX512-BF16": "avx512_bf16",
    "AMX-BF16": "amx_bf16",
    "AVX512-VNNI": "avx512_vnni",
    "AVX-VNNI": "avx_vnni",
    "AMX-INT8": "amx_int8",
}
#: the ONNX Runtime providers tthf sessions use, in its order of preference; only these are probed
ORT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ORT_PROVIDERS[:2]
#: onnxruntime-gpu wheels on PyPI from this version on are CUDA 13 builds (1.19-1.26: CUDA 12)
ORT_FIRST_CUDA13 = (1, 27)
SMI_FIELDS = ("driver_version", "name", "memory.free", "memory.total", "compute_cap")
SMI_TIMEOUT_S = 20


@dataclass
class Gpu:
    """One GPU as the driver reports it (nvidia-smi or NVML)."""

    name: str
    driver: str
    memory_free_mib: int | None = None
    memory_total_mib: int | None = None
    compute_capability: str | None = None  # "9.0"; None when the driver is too old to report it


@dataclass
class DriverInfo:
    gpus: list[Gpu] = field(default_factory=list)
    source: str = ""  # "nvidia-smi", "pynvml"
    reason: str = ""  # why no GPU was found

    @property
    def driver_major(self) -> int | None:
        return int(self.gpus[0].driver.split(".")[0]) if self.gpus and self.gpus[0].driver[:1].isdigit() else None


@dataclass
class TorchInfo:
    version: str
    cuda: str | None  # torch.version.cuda: None for a CPU build
    available: bool  # torch.cuda.is_available()
    reason: str = ""  # why CUDA is not available, in torch's words
    device: str | None = None
    compute_capability: str | None = None
    memory_free_mib: int | None = None
    device_count: int = 0


@dataclass
class TensorRTInfo:
    version: str | None  # None: does not import
    cuda_major: int | None = None  # from the installed tensorrt-cuNN distributions
    distributions: list[str] = field(default_factory=list)
    starts: bool | None = None  # trt.Runtime created; None when not tried (no CUDA device)
    error: str = ""


@dataclass
class ProviderRun:
    """One real ``InferenceSession`` created for one provider."""

    provider: str
    ran: bool  # the session got this provider and computed the right numbers
    active: list[str] = field(default_factory=list)  # session.get_providers()
    error: str = ""


@dataclass
class OrtInfo:
    version: str | None  # None: does not import
    distributions: list[str] = field(default_factory=list)  # "onnxruntime-gpu==1.26.0"
    cuda_major: int | None = None  # of onnxruntime-gpu
    available: list[str] = field(default_factory=list)  # get_available_providers()
    runs: list[ProviderRun] = field(default_factory=list)
    error: str = ""

    def ran(self, provider: str) -> bool:
        return any(r.provider == provider and r.ran for r in self.runs)


# ---------------------------------------------------------------------------------------
# CPU


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """Model name, usable cores and the SIMD / matrix features the CPU backends can use."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "features": {label: flag in flags for label, flag in CPU_FEATURES.items()},
    }


def openvino_capabilities() -> list[str] | None:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU ("BF16", "INT8", ...), None without openvino."""
    try:
        import openvino
    except ImportError:
        return None
    return [str(c) for c in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


# ---------------------------------------------------------------------------------------
# driver


def _int_or_none(text: str) -> int | None:
    text = text.strip()
    return int(float(text)) if re.fullmatch(r"[0-9.]+", text) else None


def parse_smi(csv: str, fields: tuple[str, ...]) -> list[Gpu]:
    """``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` output -> one Gpu per line."""
    gpus = []
    for line in csv.strip().splitlines():
        row = dict(zip(fields, (v.strip() for v in line.split(","))))
        cc = row.get("compute_cap", "")
        gpus.append(
            Gpu(
                name=row["name"],
                driver=row["driver_version"],
                memory_free_mib=_int_or_none(row.get("memory.free", "")),
                memory_total_mib=_int_or_none(row.get("memory.total", "")),
                compute_capability=cc if re.fullmatch(r"\d+\.\d+", cc) else None,
            )
        )
    return gpus


def nvidia_smi() -> DriverInfo:
    """The GPUs the driver sees, from nvidia-smi (older drivers cannot report compute_cap: asked without it)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return DriverInfo(reason="nvidia-smi not found on PATH")
    error = ""
    for fields in (SMI_FIELDS, SMI_FIELDS[:3]):
        try:
            proc = subprocess.run(
                [exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=SMI_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return DriverInfo(reason=f"nvidia-smi did not run: {exc}")
        if proc.returncode == 0:
            gpus = parse_smi(proc.stdout, fields)
            return DriverInfo(gpus, "nvidia-smi", "" if gpus else "nvidia-smi lists no GPU")
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        error = lines[-1] if lines else f"exit code {proc.returncode}"
    return DriverInfo(reason=f"nvidia-smi failed: {error}")


def nvml() -> DriverInfo:
    """The same facts through NVML (nvidia-ml-py), for hosts without nvidia-smi on PATH."""
    try:
        import pynvml
    except ImportError:
        return DriverInfo(reason="pynvml (nvidia-ml-py) is not installed")
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return DriverInfo(reason=f"NVML did not start: {exc}")
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                Gpu(
                    _text(pynvml.nvmlDeviceGetName(handle)),
                    driver,
                    memory.free >> 20,
                    memory.total >> 20,
                    f"{major}.{minor}",
                )
            )
    finally:
        pynvml.nvmlShutdown()
    return DriverInfo(gpus, "pynvml", "" if gpus else "NVML lists no GPU")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def driver_info() -> DriverInfo:
    found = nvidia_smi()
    if found.gpus:
        return found
    fallback = nvml()
    return fallback if fallback.gpus else DriverInfo(reason=f"{found.reason}; {fallback.reason}")


# ---------------------------------------------------------------------------------------
# torch


def torch_info() -> TorchInfo:
    """torch's version, its CUDA build and, when it sees a device, device 0 and its free memory."""
    import torch

    info = TorchInfo(version=torch.__version__, cuda=torch.version.cuda, available=torch.cuda.is_available())
    if not info.available:
        info.reason = _torch_cuda_reason(torch)
        return info
    major, minor = torch.cuda.get_device_capability(0)
    free, _ = torch.cuda.mem_get_info(0)
    info.device, info.compute_capability = torch.cuda.get_device_name(0), f"{major}.{minor}"
    info.memory_free_mib, info.device_count = free >> 20, torch.cuda.device_count()
    return info


def _torch_cuda_reason(torch: Any) -> str:
    """torch's own words for why CUDA is unavailable (``is_available`` only says False)."""
    if torch.version.cuda is None:
        return "torch is a CPU build (torch.version.cuda is None)"
    try:
        torch.cuda.init()
    except Exception as exc:
        return str(exc).strip().splitlines()[0]
    return "torch.cuda.is_available() is False"


# ---------------------------------------------------------------------------------------
# TensorRT


def _distributions(pattern: str) -> list[str]:
    """Installed distributions whose normalized name matches ``pattern``, as name==version."""
    found = set()
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "").lower())
        if re.fullmatch(pattern, name):
            found.add(f"{name}=={dist.version}")
    return sorted(found)


def _cuda_majors(names: list[str], pattern: str) -> set[int]:
    return {int(m.group(1)) for n in names if (m := re.match(pattern, n))}


def tensorrt_distributions() -> list[str]:
    """The installed TensorRT wheels (``tensorrt``, ``tensorrt-cu12``, ``tensorrt-cu12-libs``...) as name==version."""
    return _distributions(r"tensorrt(-cu\d+)?(-libs|-bindings)?")


def tensorrt_cuda_majors(dists: list[str]) -> set[int]:
    """The CUDA majors of those wheels: NVIDIA publishes one ``tensorrt-cuNN`` per CUDA major (the
    bare ``tensorrt`` is a meta-package that pulls one of them), and ``tensorrt.__version__`` does not
    say which."""
    return _cuda_majors(dists, r"tensorrt-cu(\d+)")


def tensorrt_cuda_major(dists: list[str]) -> int | None:
    """The one CUDA major of the installed TensorRT; None when there is none, or several (ambiguous)."""
    majors = tensorrt_cuda_majors(dists)
    return next(iter(majors)) if len(majors) == 1 else None


def tensorrt_info(try_start: bool) -> TensorRTInfo:
    """TensorRT's version and CUDA major; with ``try_start``, whether a ``trt.Runtime`` really starts."""
    dists = tensorrt_distributions()
    majors = tensorrt_cuda_majors(dists)
    try:
        import tensorrt as trt
    except Exception as exc:
        return TensorRTInfo(None, distributions=dists, error=f"{type(exc).__name__}: {exc}")
    info = TensorRTInfo(trt.__version__, tensorrt_cuda_major(dists), dists)
    if len(majors) > 1:
        info.error = f"TensorRT for several CUDA majors is installed: {', '.join(dists)}"
    if try_start:
        try:
            runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
            info.starts = runtime is not None
        except Exception as exc:
            info.starts, info.error = False, f"{type(exc).__name__}: {exc}"
    return info


# ---------------------------------------------------------------------------------------
# ONNX Runtime


def probe_model() -> bytes:
    """A real ONNX model: y = x @ w with x (n, 4), w (4, 3); MatMul needs cuBLAS on the CUDA provider."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "tthf_doctor_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime tthf supports
    onnx.checker.check_model(model)
    return model.SerializeToString()


def run_provider(ort: Any, model: bytes, provider: str) -> ProviderRun:
    """Create a session for ``provider`` alone, run it, and report the provider it really got."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the fallback is reported here, not as a warning
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    try:
        session = ort.InferenceSession(model, options, providers=[provider])
        active = list(session.get_providers())
        (y,) = session.run(None, {"x": x})
    except Exception as exc:
        return ProviderRun(provider, False, error=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
    right = np.array_equal(y, x @ np.arange(12, dtype=np.float32).reshape(4, 3))  # small integers: exact in TF32
    got = active[0] if active else "none"
    error = "" if got == provider else f"the session fell back to {got}"
    if got == provider and not right:
        error = "the session ran but computed wrong numbers"
    return ProviderRun(provider, got == provider and right, active, error)


def ort_cuda_major(dists: list[str]) -> int | None:
    """The CUDA major of the installed onnxruntime-gpu, from its wheel's requirements (or its version)."""
    if not any(d.startswith("onnxruntime-gpu==") for d in dists):
        return None
    requires = importlib.metadata.requires("onnxruntime-gpu") or []
    for req in requires:
        m = re.match(r"nvidia-cuda-runtime(?:-cu(\d+))?\s*[~=>]=\s*(\d+)", req)
        if m:
            return int(m.group(1) or m.group(2))
    version = tuple(int(p) for p in importlib.metadata.version("onnxruntime-gpu").split(".")[:2])
    return 13 if version >= ORT_FIRST_CUDA13 else 12


def onnxruntime_info() -> OrtInfo:
    """ONNX Runtime's version, which wheels provide it, and a real session per provider tthf uses."""
    dists = _distributions(r"onnxruntime(-gpu|-directml|-openvino|-training)?")
    try:
        import onnxruntime as ort
    except Exception as exc:
        return OrtInfo(None, dists, error=f"{type(exc).__name__}: {exc}")
    info = OrtInfo(ort.__version__, dists, ort_cuda_major(dists), list(ort.get_available_providers()))
    model = probe_model()
    info.runs = [run_provider(ort, model, p) for p in ORT_PROVIDERS if p in info.available]
    return info

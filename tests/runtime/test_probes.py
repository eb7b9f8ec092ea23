"""The host probes: real /proc/cpuinfo text, a real nvidia-smi process on PATH, real ONNX Runtime sessions.

A broken TensorRT (imports, then cannot start CUDA) cannot be produced on a CPU host, so
that one branch uses a stand-in module; everything else runs for real.
"""

from __future__ import annotations

import os
import stat
import sys
import types
from pathlib import Path

import pytest

from tthf.engine.runtime import probes

CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 amx_tile amx_bf16 amx_int8
processor\t: 1
model name\t: second socket, ignored
flags\t\t: fpu
"""


def test_cpu_features_come_from_the_first_processor_flags() -> None:
    info = probes.cpu_info(CPUINFO)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["features"] == {
        "AVX2": True, "AVX-512": True, "AVX512-BF16": True, "AMX-BF16": True,
        "AVX512-VNNI": False, "AVX-VNNI": False, "AMX-INT8": True,
    }  # fmt: skip
    assert info["cores"] >= 1
    old = probes.cpu_info("model name : AMD Opteron\nflags : fpu sse2 avx avx2\n")
    assert old["features"] == {"AVX2": True} | {label: False for label in list(probes.CPU_FEATURES)[1:]}


def test_this_hosts_cpuinfo_parses() -> None:
    info = probes.cpu_info()
    assert info["model"] and set(info["features"]) == set(probes.CPU_FEATURES)


def _fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_nvidia_smi_output_is_parsed_per_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(
        tmp_path,
        monkeypatch,
        'echo "580.65.06, NVIDIA H200, 140000, 143771, 9.0"\necho "580.65.06, NVIDIA H200, 139000, 143771, 9.0"\n',
    )
    found = probes.nvidia_smi()
    assert found.source == "nvidia-smi" and len(found.gpus) == 2 and found.driver_major == 580
    gpu = found.gpus[0]
    assert (gpu.name, gpu.driver, gpu.memory_free_mib, gpu.memory_total_mib, gpu.compute_capability) == (
        "NVIDIA H200",
        "580.65.06",
        140000,
        143771,
        "9.0",
    )


def test_an_old_driver_without_compute_cap_is_asked_again_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_smi(
        tmp_path,
        monkeypatch,
        'case "$1" in *compute_cap*) echo \'Field "compute_cap" is not a valid field '
        'to query.\'; exit 2;; esac\necho "470.57.02, Tesla T4, 15000"\n',
    )
    found = probes.nvidia_smi()
    assert [(g.name, g.driver, g.memory_free_mib, g.compute_capability) for g in found.gpus] == [
        ("Tesla T4", "470.57.02", 15000, None)
    ]


def test_a_failing_nvidia_smi_is_a_reason_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(
        tmp_path,
        monkeypatch,
        "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9\n",
    )
    found = probes.nvidia_smi()
    assert found.gpus == [] and "could not communicate with the NVIDIA driver" in found.reason


def test_no_nvidia_smi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert probes.nvidia_smi().reason == "nvidia-smi not found on PATH"


def test_the_cpu_provider_really_runs_a_session() -> None:
    pytest.importorskip("onnxruntime")
    info = probes.onnxruntime_info()
    assert info.version and "CPUExecutionProvider" in info.available
    cpu = next(r for r in info.runs if r.provider == "CPUExecutionProvider")
    assert cpu.ran and cpu.active == ["CPUExecutionProvider"] and cpu.error == ""
    assert {r.provider for r in info.runs} <= set(probes.ORT_PROVIDERS)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_a_provider_that_falls_back_to_the_cpu_is_not_counted_as_running() -> None:
    """ONNX Runtime accepts a provider it cannot load and runs the session on the CPU instead."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider; the fallback needs one that it lacks")
    got = probes.run_provider(ort, probes.probe_model(), "CUDAExecutionProvider")
    assert not got.ran and got.active == ["CPUExecutionProvider"]
    assert got.error == "the session fell back to CPUExecutionProvider"


def test_missing_tensorrt_is_reported_with_its_import_error() -> None:
    if "tensorrt" in sys.modules or _importable("tensorrt"):
        pytest.skip("tensorrt is installed here")
    info = probes.tensorrt_info(try_start=True)
    assert info.version is None and "No module named 'tensorrt'" in info.error and info.starts is None


def test_a_tensorrt_that_imports_but_cannot_start_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """pybind11 raises TypeError when trt.Runtime's factory returns nullptr (no usable CUDA)."""
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "11.4.0.106"

    class Logger:
        ERROR = 1

        def __init__(self, severity: int) -> None:
            self.severity = severity

    def runtime(logger: Logger) -> None:
        raise TypeError("pybind11::init(): factory function returned nullptr")

    fake.Logger, fake.Runtime = Logger, runtime
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    info = probes.tensorrt_info(try_start=True)
    assert info.version == "11.4.0.106" and info.starts is False
    assert info.error == "TypeError: pybind11::init(): factory function returned nullptr"
    assert probes.tensorrt_info(try_start=False).starts is None


@pytest.mark.parametrize(
    ("requires", "version", "major"),
    [
        (['nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"'], "1.26.0", 12),
        (['nvidia-cuda-runtime~=13.0; extra == "cuda"'], "1.31.1", 13),
        ([], "1.20.0", 12),  # before the [cuda] extra: by version
        ([], "1.27.0", 13),
    ],
)
def test_onnxruntime_gpu_cuda_major_from_its_wheel(
    monkeypatch: pytest.MonkeyPatch, requires: list[str], version: str, major: int
) -> None:
    monkeypatch.setattr(probes.importlib.metadata, "requires", lambda name: requires)
    monkeypatch.setattr(probes.importlib.metadata, "version", lambda name: version)
    assert probes.ort_cuda_major([f"onnxruntime-gpu=={version}"]) == major
    assert probes.ort_cuda_major(["onnxruntime==1.32.0"]) is None


def test_torch_reports_its_build() -> None:
    import torch

    info = probes.torch_info()
    assert info.version == torch.__version__ and info.cuda == torch.version.cuda
    assert info.available == torch.cuda.is_available()
    if not info.available:
        assert info.reason and info.device is None


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None

"""tthf-doctor on this host for real, and its judgement of GPU hosts from their facts.

The first group runs the real CLI here (a CPU host: no GPU must be reported clearly, the
ONNX Runtime CPU provider must really run a session). The second gives ``diagnose`` the
facts of GPU hosts that are broken in the ways the GPU audit found (``gather`` replaced by
a Host built by hand) and checks each mismatch line and its fix, and the verdict.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tthf.cli.doctor import main
from tthf.engine.artifacts import Manifest
from tthf.engine.runs import Run
from tthf.engine.runtime import doctor
from tthf.engine.runtime.backends import REGISTRY
from tthf.engine.runtime.backends.base import AutoRank, Backend, BackendSpec, Needs
from tthf.engine.runtime.backends.tensorrt import GpuTarget
from tthf.engine.runtime.doctor import Host, diagnose
from tthf.engine.runtime.probes import DriverInfo, Gpu, OrtInfo, ProviderRun, TensorRTInfo, TorchInfo, driver_info
from tthf.engine.testing import make_data, make_run
from tthf.errors import UsageError

CPU_HOST = not torch.cuda.is_available() and not driver_info().gpus
cpu_host_only = pytest.mark.skipif(not CPU_HOST, reason="asserts what a host without a GPU reports; this host has one")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Run]:
    """A store with one tiny run that was never exported."""
    base = tmp_path_factory.mktemp("doctor")
    run = make_run(str(base / "store"), make_data(base / "data"))
    return str(base / "store"), run


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# this host, for real


@cpu_host_only
def test_no_gpu_is_reported_clearly_and_auto_runs_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(capsys)
    lines = {line.split()[0]: line for line in out.splitlines()[1:7]}
    assert "no NVIDIA GPU visible" in lines["gpu"] and "no NVIDIA driver found" in lines["driver"]
    assert "CPU build (no CUDA)" in lines["torch"]
    assert "sessions really ran on: CPUExecutionProvider" in lines["onnxruntime"]
    assert "AVX2" in lines["cpu"] and "AMX-BF16" in lines["cpu"]
    assert re.match(r"OK: backend auto -> (openvino|onnxruntime) runs on cpu", out.strip().splitlines()[-1])
    assert code == 0


@cpu_host_only
def test_backend_tensorrt_on_a_cpu_host_fails_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(capsys, "--backend", "tensorrt")
    verdict = out.strip().splitlines()[-1]
    assert code == 6
    assert verdict.startswith("FAIL: backend tensorrt cannot run here")
    assert "fix: TensorRT needs a CUDA GPU: on a GPU host pip install 'tthf[gpu-cu12]'" in verdict
    assert "choose --backend onnxruntime or torch" in verdict


@cpu_host_only
def test_expect_gpu_on_a_cpu_host_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(capsys, "--expect", "gpu")
    assert code == 6
    last = out.strip().splitlines()[-1]
    assert re.match(r"FAIL: backend auto -> (openvino|onnxruntime) runs on cpu \(.*\); expected gpu; ", last), last
    assert last.endswith(
        "fix: no CUDA device is visible here: run on a GPU host (nvidia-smi must list the GPU), or pass --expect cpu"
    )


@cpu_host_only
def test_json_report_parses(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(capsys, "--json", "--backend", "torch")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and report["exit_code"] == 0
    assert (report["runs_as"], report["device"], report["expect"]) == ("torch", "cpu", "cpu")
    assert [c["topic"] for c in report["checks"]] == ["cpu", "gpu", "driver", "torch", "tensorrt", "onnxruntime"]
    runs = report["host"]["onnxruntime"]["runs"]
    assert {"provider": "CPUExecutionProvider", "ran": True, "active": ["CPUExecutionProvider"], "error": ""} in runs
    assert report["host"]["driver"]["gpus"] == [] and report["host"]["torch"]["cuda"] is None


def test_a_run_without_export_is_reported(capsys: pytest.CaptureFixture[str], store: tuple[str, Run]) -> None:
    root, run = store
    code, out = _cli(capsys, "--run", "jenn", "--store", root, "--expect", "cpu", "--backend", "torch")
    assert code == 0  # torch needs no export
    assert (
        f"  MISMATCH export: run {run.ref.name} has no export (no model.onnx, no engine); "
        "fix: tthf-export --run jennifer"
    ) in out
    code, out = _cli(capsys, "--run", "jennifer", "--store", root, "--expect", "cpu", "--backend", "onnxruntime")
    assert code == 6
    assert out.strip().endswith("fix: export the run first: tthf-export --run jennifer")


def test_auto_on_a_run_without_export_is_torch(capsys: pytest.CaptureFixture[str], store: tuple[str, Run]) -> None:
    code, out = _cli(capsys, "--run", "jennifer", "--store", store[0], "--expect", "cpu" if CPU_HOST else "gpu")
    assert out.strip().splitlines()[-1].startswith("OK: backend auto -> torch runs on")
    assert code == 0


def test_an_unknown_run_is_a_store_error(capsys: pytest.CaptureFixture[str], store: tuple[str, Run]) -> None:
    assert main(["--run", "nobody", "--store", store[0]]) == 4
    assert "no run matches 'nobody'" in capsys.readouterr().err


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown backend 'cuda'"):
        diagnose(backend="cuda")
    with pytest.raises(UsageError, match="choose cpu or gpu"):
        diagnose(expect="tpu")
    with pytest.raises(UsageError, match="without a store"):
        diagnose("jennifer")


@pytest.mark.slow
@cpu_host_only
def test_an_exported_run_on_a_cpu_host(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig

    run = make_run(str(tmp_path / "store"), make_data(tmp_path / "data"))
    export_run(run, ExportConfig(real_windows=64, random_batches=(3,)))
    code, out = _cli(capsys, "--run", "jennifer", "--store", str(tmp_path / "store"), "--backend", "onnxruntime")
    assert code == 0
    engine = next(line for line in out.splitlines() if line.startswith("  engine"))
    assert "model.onnx, model_fp16.onnx; engines: none; no GPU target here" in engine
    assert out.strip().splitlines()[-1].startswith("OK: backend onnxruntime runs on cpu (CPUExecutionProvider")


@pytest.mark.slow
@cpu_host_only
def test_the_console_entry_point_exits_6_for_tensorrt_here() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tthf.cli.doctor", "--backend", "tensorrt", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 6, proc.stderr
    assert json.loads(proc.stdout)["verdict"].startswith("FAIL: backend tensorrt cannot run here")


# ---------------------------------------------------------------------------------------
# GPU hosts, from their facts

H200 = DriverInfo([Gpu("NVIDIA H200", "580.65.06", 140000, 143771, "9.0")], "nvidia-smi")
TORCH_CU12 = TorchInfo(
    "2.13.0+cu128", "12.8", True, device="NVIDIA H200", compute_capability="9.0", memory_free_mib=139000, device_count=1
)
TRT_CU12 = TensorRTInfo(
    "11.4.0.106",
    12,
    ["tensorrt-cu12-bindings==11.4.0.106", "tensorrt-cu12-libs==11.4.0.106", "tensorrt-cu12==11.4.0.106"],
    starts=True,
)
ORT_CU12 = OrtInfo(
    "1.26.0",
    ["onnxruntime-gpu==1.26.0"],
    12,
    ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    [
        ProviderRun(
            "TensorrtExecutionProvider",
            False,
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "the session fell back to CUDAExecutionProvider",
        ),
        ProviderRun("CUDAExecutionProvider", True, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        ProviderRun("CPUExecutionProvider", True, ["CPUExecutionProvider"]),
    ],
)
CPU_FACTS = {"model": "AMD EPYC", "cores": 16, "features": {"AVX2": True, "AVX-512": True}}
TARGET = GpuTarget("NVIDIA H200", "9.0", "11.4.0.106", "12.8")
GOOD = Host(CPU_FACTS, H200, TORCH_CU12, TRT_CU12, ORT_CU12, TARGET)


def _diagnose(monkeypatch: pytest.MonkeyPatch, host: Host, **kwargs: object) -> doctor.Report:
    monkeypatch.setattr(doctor, "gather", lambda: host)
    return diagnose(**kwargs)


def _only_problem(report: doctor.Report) -> doctor.Check:
    problems = report.problems()
    assert len(problems) == 1, [c.problem for c in problems]
    return problems[0]


def test_a_consistent_gpu_host_has_no_mismatch_and_auto_is_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    report = _diagnose(monkeypatch, GOOD)
    assert report.problems() == [] and report.expect == "gpu"
    assert (report.runs_as, report.device, report.exit_code) == ("tensorrt", "gpu", 0)
    text = report.format()
    assert "NVIDIA H200, compute capability 9.0, 140000 MiB free of 143771 (nvidia-smi)" in text
    assert "580.65.06 (runs CUDA 13 at most)" in text
    assert "sessions really ran on: CUDAExecutionProvider, CPUExecutionProvider" in text
    ort = _diagnose(monkeypatch, GOOD, backend="onnxruntime")
    assert (ort.device, ort.detail, ort.exit_code) == ("gpu", "a session runs on CUDAExecutionProvider", 0)


def test_a_cpu_torch_on_a_gpu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_torch = TorchInfo("2.13.0+cpu", None, False, "torch is a CPU build (torch.version.cuda is None)")
    report = _diagnose(
        monkeypatch,
        dataclasses.replace(GOOD, torch=cpu_torch, target=None, target_reason="no CUDA device is visible to PyTorch"),
        backend="torch",
    )
    check = next(c for c in report.problems() if c.topic == "torch")
    assert check.problem == "the driver sees NVIDIA H200 but torch is a CPU build"
    assert check.fix == "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"
    assert (report.device, report.expect, report.exit_code, report.fix) == ("cpu", "gpu", 6, check.fix)


def test_tensorrt_for_another_cuda_major_than_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    trt13 = TensorRTInfo("11.4.0.106", 13, ["tensorrt-cu13==11.4.0.106", "tensorrt==11.4.0.106"], starts=True)
    check = _only_problem(_diagnose(monkeypatch, dataclasses.replace(GOOD, tensorrt=trt13)))
    assert (check.topic, check.problem) == ("tensorrt", "TensorRT is a CUDA 13 build, torch is CUDA 12.8")
    assert check.fix == (
        "pip uninstall -y tensorrt-cu13 tensorrt && "
        "pip install 'tthf[gpu-cu12]' --extra-index-url https://pypi.nvidia.com"
    )


def test_a_tensorrt_that_cannot_start_is_skipped_by_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = dataclasses.replace(
        TRT_CU12, starts=False, error="TypeError: pybind11::init(): factory function returned nullptr"
    )
    host = dataclasses.replace(GOOD, tensorrt=broken)
    check = _only_problem(_diagnose(monkeypatch, host))
    assert check.problem == (
        "TensorRT imports but cannot start CUDA (TypeError: pybind11::init(): factory function returned nullptr)"
    )
    auto = _diagnose(monkeypatch, host)
    assert (auto.runs_as, auto.device, auto.exit_code) == ("onnxruntime", "gpu", 0)
    asked = _diagnose(monkeypatch, host, backend="tensorrt")
    assert asked.device is None and asked.exit_code == 6 and asked.fix == check.fix


def test_onnxruntime_that_falls_back_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit's first finding: a CUDA 13 onnxruntime-gpu beside a CUDA 12 torch runs on the CPU."""
    fell_back = ProviderRun(
        "CUDAExecutionProvider", False, ["CPUExecutionProvider"], "the session fell back to CPUExecutionProvider"
    )
    ort13 = dataclasses.replace(
        ORT_CU12,
        version="1.31.1",
        distributions=["onnxruntime-gpu==1.31.1"],
        cuda_major=13,
        runs=[fell_back, ORT_CU12.runs[2]],
    )
    report = _diagnose(monkeypatch, dataclasses.replace(GOOD, onnxruntime=ort13), backend="onnxruntime")
    check = _only_problem(report)
    assert check.problem.startswith("onnxruntime-gpu is a CUDA 13 build, torch is CUDA 12.8")
    assert check.fix == (
        "pip uninstall -y onnxruntime-gpu && pip install 'tthf[gpu-cu12]' --extra-index-url https://pypi.nvidia.com"
    )
    assert (report.device, report.exit_code, report.fix) == ("cpu", 6, check.fix)
    same_major = dataclasses.replace(ort13, cuda_major=12)
    check = _only_problem(_diagnose(monkeypatch, dataclasses.replace(GOOD, onnxruntime=same_major)))
    assert (
        check.problem == "CUDAExecutionProvider is available but a session on it the session fell back to "
        "CPUExecutionProvider"
    )
    assert "onnxruntime.preload_dlls()" in check.fix


def test_both_onnxruntime_wheels_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    both = dataclasses.replace(ORT_CU12, distributions=["onnxruntime-gpu==1.26.0", "onnxruntime==1.32.0"])
    check = _only_problem(_diagnose(monkeypatch, dataclasses.replace(GOOD, onnxruntime=both)))
    assert check.problem == "onnxruntime-gpu and onnxruntime are installed together and overwrite each other's module"
    assert check.fix.startswith("pip uninstall -y onnxruntime-gpu onnxruntime && pip install 'tthf[gpu-cu12]'")


def test_the_cpu_onnxruntime_on_a_gpu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_ort = OrtInfo("1.32.0", ["onnxruntime==1.32.0"], None, ["CPUExecutionProvider"], [ORT_CU12.runs[2]])
    check = _only_problem(_diagnose(monkeypatch, dataclasses.replace(GOOD, onnxruntime=cpu_ort)))
    assert check.problem == "the CPU build of onnxruntime on a GPU host"
    assert check.fix.startswith("pip uninstall -y onnxruntime && pip install 'tthf[gpu-cu12]'")


def test_a_driver_too_old_for_cuda_13(monkeypatch: pytest.MonkeyPatch) -> None:
    old = DriverInfo([dataclasses.replace(H200.gpus[0], driver="570.124.06")], "nvidia-smi")
    torch13 = dataclasses.replace(TORCH_CU12, version="2.13.0+cu130", cuda="13.0")
    trt13 = dataclasses.replace(TRT_CU12, cuda_major=13, distributions=["tensorrt-cu13==11.4.0.106"])
    ort13 = dataclasses.replace(ORT_CU12, cuda_major=13)
    report = _diagnose(monkeypatch, Host(CPU_FACTS, old, torch13, trt13, ort13, TARGET))
    check = _only_problem(report)
    assert check.topic == "driver" and check.problem == (
        "the driver is too old for torch 13.0 (CUDA 13), TensorRT 11.4.0.106 (CUDA 13), "
        "onnxruntime-gpu 1.26.0 (CUDA 13)"
    )
    assert check.fix.startswith(
        "upgrade the NVIDIA driver to R580 or newer, or install the CUDA 12 builds: "
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
    )


def test_expect_cpu_while_the_backend_runs_on_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    report = _diagnose(monkeypatch, GOOD, backend="torch-cuda", expect="cpu")
    assert (report.device, report.exit_code) == ("gpu", 6)
    assert report.fix == "hide the GPU with CUDA_VISIBLE_DEVICES= (empty), or pass --expect gpu"


def test_a_registered_backend_is_placed_from_its_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend doctor has no probe for: placed by whether its libraries import, its device, precision and rank."""
    spec = BackendSpec(
        "plug-in", Backend, precision="fp32", device="cuda", needs=Needs(("json",), "model.onnx"),
        auto_rank=AutoRank(cpu=-1, cuda=-1),
    )  # fmt: skip
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    assert doctor.infer_placement("plug-in", GOOD) == doctor.Placement("plug-in", "gpu", "json imports")
    assert doctor.infer_placement("auto", GOOD).runs_as == "plug-in"  # ranked before tensorrt
    cpu_torch = dataclasses.replace(GOOD, torch=TorchInfo("2.13.0+cpu", None, False, "a CPU build"))
    assert "torch sees no CUDA device" in doctor.infer_placement("plug-in", cpu_torch).detail
    cases = {
        "the no_such_tthf_package package is not installed": {"needs": Needs(("no_such_tthf_package",))},
        "this CPU has no native bf16 (AVX-512 BF16 or AMX)": {"device": "cpu", "precision": "bf16"},
    }
    for reason, change in cases.items():
        monkeypatch.setitem(REGISTRY, spec.name, dataclasses.replace(spec, **change))
        assert doctor.infer_placement("plug-in", GOOD) == doctor.Placement(None, None, reason)


def test_an_engine_built_on_another_gpu_model_of_the_same_architecture(tmp_path: Path) -> None:
    """H100 and H200 are both sm90: the engine file name matches, the manifest's gpu_name does not."""
    run = make_run(str(tmp_path / "store"), make_data(tmp_path / "data"))
    name = TARGET.engine_filename()
    manifest = Manifest(run=run.ref.name, sources={}, export_config={}, versions={})
    manifest.add_artifact("model.onnx", b"x")
    manifest.add_artifact(name, b"engine", kind="tensorrt", gpu_name="NVIDIA H100 80GB HBM3")
    manifest.write(run)
    (check,) = doctor.export_checks(run, GOOD)
    assert check.problem == (
        f"{name} was built on NVIDIA H100 80GB HBM3, this GPU is NVIDIA H200 (same "
        "architecture, but engines are not portable across GPU models)"
    )
    assert check.fix == "rebuild it here: tthf-export --run jennifer --require-engine"
    manifest.artifacts[name]["gpu_name"] = "NVIDIA H200"
    manifest.write(run)
    (check,) = doctor.export_checks(run, GOOD)
    assert check.problem == "" and check.found.endswith(f"{name} was built for this GPU")
    blackwell = dataclasses.replace(GOOD, target=dataclasses.replace(TARGET, compute_capability="10.0"))
    (check,) = doctor.export_checks(run, blackwell)
    assert check.problem == "" and "none for this GPU" in check.found and "--require-engine" in check.found


def test_every_mismatch_is_one_line_with_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = Host(
        CPU_FACTS,
        H200,
        TorchInfo("2.13.0+cpu", None, False, "CPU build"),
        dataclasses.replace(TRT_CU12, cuda_major=13, distributions=["tensorrt-cu13==11.4.0.106"]),
        dataclasses.replace(ORT_CU12, distributions=["onnxruntime-gpu==1.26.0", "onnxruntime==1.32.0"]),
        None,
        "no CUDA device is visible to PyTorch",
    )
    report = _diagnose(monkeypatch, broken)
    lines = [line for line in report.format().splitlines() if "MISMATCH" in line]
    assert len(lines) == len(report.problems()) >= 2
    assert all("; fix: " in line and line.split("; fix: ")[1] for line in lines)
    assert all("\n" not in c.problem + c.fix for c in report.checks)


def test_the_cpu_line_says_which_logs_the_features_kernel_uses() -> None:
    from types import SimpleNamespace

    from tthf.engine.runtime.doctor import cpu_check

    base = {"model": "EPYC", "cores": 2, "features": {"AVX2": True}}
    vector = cpu_check(SimpleNamespace(cpu={**base, "vector_math": True}))  # type: ignore[arg-type]
    scalar = cpu_check(SimpleNamespace(cpu={**base, "vector_math": False}))  # type: ignore[arg-type]
    assert vector.found.startswith("EPYC, 2 cores; AVX2 yes; features kernel logs: AVX2 vector (libmvec); bf16 ")
    assert "features kernel logs: scalar (libm); " in scalar.found
    env = {**os.environ, "TTHF_SCALAR_MATH": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "tthf.cli.doctor"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "features kernel logs: scalar (libm)" in out.stdout


#: /proc/cpuinfo of three CPUs, flags only: AVX2 alone (no VNNI), Cascade Lake (AVX512-VNNI, no bf16),
#: Sapphire Rapids (AVX-512 BF16, VNNI, AMX)
CPUINFO = {
    "avx2": "model name\t: Old Xeon\nflags\t\t: fpu sse4_2 avx avx2 fma\n",
    "cascade-lake": "model name\t: Xeon 8280\nflags\t\t: avx avx2 avx512f avx512_vnni\n",
    "sapphire-rapids": "model name\t: Xeon 8480\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni avx_vnni amx_bf16 amx_int8 amx_tile\n",
}


@pytest.mark.parametrize(
    ("cpu", "bf16", "int8"),
    [
        ("avx2", "not native (no AVX-512 BF16 or AMX", "not native (no VNNI or AMX"),
        ("cascade-lake", "not native", "native (AVX512-VNNI)"),
        ("sapphire-rapids", "native (AVX512-BF16, AMX-BF16)", "native (AVX512-VNNI, AVX-VNNI, AMX-INT8)"),
    ],
)
def test_doctor_says_which_reduced_precisions_the_cpu_runs_natively(cpu: str, bf16: str, int8: str) -> None:
    from tthf.engine.runtime.doctor import reduced_precisions
    from tthf.engine.runtime.probes import cpu_info

    facts = cpu_info(CPUINFO[cpu])
    said = reduced_precisions(facts)
    assert said["bf16"].startswith(bf16) and said["int8"].startswith(int8), said
    assert "OpenVINO" not in said["bf16"]  # without openvino's capabilities, the flags alone
    seen = reduced_precisions({**facts, "openvino": ["FP32", "INT8"]})
    assert "OpenVINO lacks BF16" in seen["bf16"] and "OpenVINO lists INT8" in seen["int8"]

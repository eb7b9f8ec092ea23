"""``diagnose``: what this host can run, every mismatch with its fix, and whether a backend runs where expected.

The GPU path tends to fail quietly: ONNX Runtime falls back to the CPU when its CUDA
libraries do not match torch's, a TensorRT for another CUDA major imports and then cannot
start, a CPU build of torch hides a working GPU. ``tthf-doctor`` turns each of those into
one line with the fix, from facts gathered by ``tthf.engine.runtime.probes``.

The verdict is about one backend (``--backend``, default auto) and one device (``--expect``,
default gpu when the driver or torch sees a CUDA device, else cpu). With a run, the real
backend is opened through ``open_backend`` (as ``tthf-run`` does, without building a missing
engine) and its device is read from it; without one, the device is inferred from the
probes, for a run that has been exported. The ONNX Runtime probe runs before torch is
imported, the state in which ``tthf-run --backend onnxruntime`` creates its session.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tthf.engine.artifacts import Manifest, is_exported
from tthf.engine.runs import Run, find_run
from tthf.engine.runtime import probes
from tthf.engine.runtime.backends import BACKENDS, REGISTRY, BackendSpec, auto_order, fallback, open_backend
from tthf.engine.runtime.backends.tensorrt import GpuTarget, current_target
from tthf.engine.store import Store
from tthf.errors import BackendUnavailableError, NotExportedError, TthfError, UsageError

EXPECT = ("cpu", "gpu")
#: oldest Linux driver branch for each CUDA major (CUDA minor-version compatibility)
MIN_DRIVER = {12: 525, 13: 580}
#: the PyTorch wheel index of each CUDA major (README, "Install on a GPU host")
TORCH_INDEX = {12: "https://download.pytorch.org/whl/cu128", 13: "https://download.pytorch.org/whl/cu130"}
NVIDIA_INDEX = "--extra-index-url https://pypi.nvidia.com"


@dataclass
class Check:
    """One line of the report: what was found and, for a mismatch, the problem and its fix."""

    topic: str
    found: str
    problem: str = ""
    fix: str = ""


@dataclass
class Host:
    """Every fact the checks judge."""

    cpu: dict[str, Any]
    driver: probes.DriverInfo
    torch: probes.TorchInfo
    tensorrt: probes.TensorRTInfo
    onnxruntime: probes.OrtInfo
    target: GpuTarget | None
    target_reason: str = ""

    @property
    def gpu_visible(self) -> bool:
        return bool(self.driver.gpus) or self.torch.available

    @property
    def torch_major(self) -> int | None:
        return int(self.torch.cuda.split(".")[0]) if self.torch.cuda else None

    def wanted_major(self) -> int:
        """The CUDA major the GPU wheels should have: torch's, else the newest the driver runs."""
        if self.torch_major:
            return self.torch_major
        return driver_cuda_major(self.driver.driver_major) or 12


@dataclass
class Report:
    checks: list[Check]
    backend: str  # what was asked
    runs_as: str | None  # the backend that would serve (auto resolved), None when none can
    device: str | None  # "cpu", "gpu", or None when the backend cannot run here
    detail: str  # where it runs, or why it cannot
    expect: str
    fix: str = ""  # for a failed verdict
    run: str | None = None
    host: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.device == self.expect

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else BackendUnavailableError.exit_code

    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.problem]

    def verdict(self) -> str:
        where = f"runs on {self.device}" if self.device else "cannot run here"
        name = self.backend if self.runs_as in (None, self.backend) else f"{self.backend} -> {self.runs_as}"
        line = f"backend {name} {where} ({self.detail}); expected {self.expect}"
        return f"OK: {line}" if self.ok else f"FAIL: {line}; fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(ok=self.ok, exit_code=self.exit_code, verdict=self.verdict())
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def format(self) -> str:
        width = max(len(c.topic) for c in self.checks)
        lines = ["tthf-doctor: what this host can run"]
        lines += [f"  {c.topic:<{width}}  {c.found}" for c in self.checks]
        problems = self.problems()
        lines.append(f"mismatches: {len(problems)}" + ("" if problems else " (none)"))
        lines += [f"  MISMATCH {c.topic}: {c.problem}; fix: {c.fix}" for c in problems]
        lines.append(self.verdict())
        return "\n".join(lines)


def driver_cuda_major(driver_major: int | None) -> int | None:
    """The newest CUDA major a Linux driver branch runs (None: unknown or older than CUDA 12)."""
    if driver_major is None:
        return None
    fits = [major for major, oldest in MIN_DRIVER.items() if driver_major >= oldest]
    return max(fits) if fits else None


def gpu_extra(major: int) -> str:
    return f"pip install 'tthf[gpu-cu{major}]' {NVIDIA_INDEX}"


def torch_install(major: int, version: str) -> str:
    return f"pip install torch=={version.split('+')[0]} --index-url {TORCH_INDEX.get(major, TORCH_INDEX[12])}"


# ---------------------------------------------------------------------------------------
# facts


def gather() -> Host:
    """Probe every layer; ONNX Runtime first, before anything imports torch (see the module docstring)."""
    ort = probes.onnxruntime_info()
    torch = probes.torch_info()
    driver = probes.driver_info()
    trt = probes.tensorrt_info(try_start=torch.available)
    try:
        target, reason = current_target(), ""
    except BackendUnavailableError as exc:
        target, reason = None, str(exc)
    cpu = {**probes.cpu_info(), "vector_math": _kernel_vector_math(), "openvino": probes.openvino_capabilities()}
    return Host(cpu, driver, torch, trt, ort, target, reason)


def _kernel_vector_math() -> bool:
    from tthf.engine import _kernels

    return bool(_kernels.vector_math())


# ---------------------------------------------------------------------------------------
# checks, one per layer


def cpu_check(host: Host) -> Check:
    features = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in host.cpu["features"].items())
    vector = host.cpu.get("vector_math")
    logs = (
        "" if vector is None else "; features kernel logs: " + ("AVX2 vector (libmvec)" if vector else "scalar (libm)")
    )
    reduced = "; ".join(f"{k} {v}" for k, v in reduced_precisions(host.cpu).items())
    return Check("cpu", f"{host.cpu['model']}, {host.cpu['cores']} cores; {features}{logs}; {reduced}")


#: the instructions that run each reduced precision's matrix products natively (docs/export.md,
#: "Reduced precision on the CPU"); OpenVINO's capability that must be there too
NATIVE = {
    "bf16": (("AVX512-BF16", "AMX-BF16"), "BF16"),
    "int8": (("AVX512-VNNI", "AVX-VNNI", "AMX-INT8"), "INT8"),
}


def reduced_precisions(cpu: dict[str, Any]) -> dict[str, str]:
    """Whether this CPU runs bf16 and int8 natively: from its /proc/cpuinfo flags and, where openvino is
    installed, OpenVINO's OPTIMIZATION_CAPABILITIES (which the openvino-bf16/-int8 backends go by)."""
    capabilities = cpu.get("openvino")
    out = {}
    for precision, (flags, capability) in NATIVE.items():
        have = [f for f in flags if cpu["features"].get(f)]
        seen = (
            ""
            if capabilities is None
            else f"; OpenVINO {'lists' if capability in capabilities else 'lacks'} {capability}"
        )
        if have:
            out[precision] = f"native ({', '.join(have)}{seen})"
        elif precision == "int8":
            out[precision] = f"not native (no VNNI or AMX: openvino-int8 runs, without its speed-up{seen})"
        else:
            out[precision] = f"not native (no AVX-512 BF16 or AMX: openvino-bf16 unavailable{seen})"
    return out


def gpu_check(host: Host) -> Check:
    if host.driver.gpus:
        gpu = host.driver.gpus[0]
        more = f" (+{len(host.driver.gpus) - 1} more)" if len(host.driver.gpus) > 1 else ""
        cc = gpu.compute_capability or host.torch.compute_capability or "unknown"
        free = f", {gpu.memory_free_mib} MiB free of {gpu.memory_total_mib}" if gpu.memory_free_mib is not None else ""
        return Check("gpu", f"{gpu.name}{more}, compute capability {cc}{free} ({host.driver.source})")
    if host.torch.available:
        return Check(
            "gpu",
            f"{host.torch.device}, compute capability {host.torch.compute_capability}, "
            f"{host.torch.memory_free_mib} MiB free (torch; the driver probe: {host.driver.reason})",
        )
    return Check("gpu", f"no NVIDIA GPU visible ({host.driver.reason}; torch: {host.torch.reason})")


def driver_check(host: Host) -> Check:
    major = host.driver.driver_major
    if major is None:
        return Check("driver", "no NVIDIA driver found")
    runs = driver_cuda_major(major)
    found = f"{host.driver.gpus[0].driver} (runs CUDA {runs or '11 or older'} at most)"
    needs = {
        f"torch {host.torch.cuda}": host.torch_major,
        f"TensorRT {host.tensorrt.version}": host.tensorrt.cuda_major,
        f"onnxruntime-gpu {host.onnxruntime.version}": host.onnxruntime.cuda_major,
    }
    too_new = [f"{what} (CUDA {m})" for what, m in needs.items() if m and (runs is None or m > runs)]
    if not too_new:
        return Check("driver", found)
    oldest = MIN_DRIVER.get(max(m for m in needs.values() if m), "a newer")
    return Check(
        "driver",
        found,
        f"the driver is too old for {', '.join(too_new)}",
        f"upgrade the NVIDIA driver to R{oldest} or newer, or install the CUDA {runs or 12} builds: "
        f"{torch_install(runs or 12, host.torch.version)}, then {gpu_extra(runs or 12)}",
    )


def torch_check(host: Host) -> Check:
    t = host.torch
    if t.available:
        return Check("torch", f"{t.version}, CUDA {t.cuda}, sees {t.device_count} device(s)")
    found = f"{t.version}, " + (f"CUDA {t.cuda} build, no device: {t.reason}" if t.cuda else "CPU build (no CUDA)")
    if not host.driver.gpus:
        return Check("torch", found)
    gpu = host.driver.gpus[0].name
    major = driver_cuda_major(host.driver.driver_major) or 12
    if t.cuda is None:
        return Check("torch", found, f"the driver sees {gpu} but torch is a CPU build", torch_install(major, t.version))
    return Check(
        "torch",
        found,
        f"the driver sees {gpu} but torch (CUDA {t.cuda}) cannot use it: {t.reason}",
        "check CUDA_VISIBLE_DEVICES and nvidia-smi; if the driver is too old for this torch, "
        f"{torch_install(major, t.version)}",
    )


def tensorrt_check(host: Host) -> Check:
    trt, want = host.tensorrt, host.wanted_major()
    if trt.version is None:
        if "No module named" in trt.error:
            if host.gpu_visible:
                return Check("tensorrt", "not installed", "TensorRT is not installed on a GPU host", gpu_extra(want))
            return Check("tensorrt", "not installed (not needed without a GPU)")
        return Check(
            "tensorrt",
            "does not import",
            f"tensorrt is installed but does not import: {trt.error}",
            f"reinstall it: pip uninstall -y {' '.join(d.split('==')[0] for d in trt.distributions)}; "
            f"{gpu_extra(want)}",
        )
    found = f"{trt.version} ({', '.join(trt.distributions) or 'not from pip'})"
    if trt.error and trt.starts is not False:  # several CUDA majors
        return Check("tensorrt", found, trt.error, _reinstall(trt.distributions, want))
    if trt.cuda_major and host.torch_major and trt.cuda_major != host.torch_major:
        return Check(
            "tensorrt",
            found,
            f"TensorRT is a CUDA {trt.cuda_major} build, torch is CUDA {host.torch.cuda}",
            _reinstall(trt.distributions, host.torch_major),
        )
    if trt.starts is False:
        return Check(
            "tensorrt",
            found,
            f"TensorRT imports but cannot start CUDA ({trt.error})",
            f"match the CUDA majors of TensorRT, torch and the driver: {_reinstall(trt.distributions, want)}",
        )
    if not host.torch.available:
        return Check("tensorrt", f"{found}; not started: no CUDA device visible to torch")
    return Check("tensorrt", f"{found}; a TensorRT runtime started on the GPU")


def _reinstall(dists: list[str], major: int) -> str:
    names = " ".join(d.split("==")[0] for d in dists)
    return f"pip uninstall -y {names} && {gpu_extra(major)}"


def onnxruntime_check(host: Host) -> Check:
    ort = host.onnxruntime
    if ort.version is None:
        return Check("onnxruntime", f"not installed ({ort.error}); the onnxruntime backend cannot run")
    ran = [r.provider for r in ort.runs if r.ran]
    unused = [p for p in ort.available if p not in probes.ORT_PROVIDERS]
    found = f"{ort.version} ({', '.join(ort.distributions)}); sessions really ran on: {', '.join(ran) or 'nothing'}" + (
        f"; not used by tthf: {', '.join(unused)}" if unused else ""
    )
    problem, fix = _ort_problem(host, ran)
    return Check("onnxruntime", found, problem, fix)


def _ort_problem(host: Host, ran: list[str]) -> tuple[str, str]:
    ort, want = host.onnxruntime, host.wanted_major()
    names = [d.split("==")[0] for d in ort.distributions]
    if len(names) > 1:
        reinstall = gpu_extra(want) if host.gpu_visible else "pip install onnxruntime"
        return (
            f"{' and '.join(names)} are installed together and overwrite each other's module",
            f"pip uninstall -y {' '.join(names)} && {reinstall}",
        )
    if ort.cuda_major and host.torch_major and ort.cuda_major != host.torch_major:
        problem = (
            f"onnxruntime-gpu is a CUDA {ort.cuda_major} build, torch is CUDA {host.torch.cuda}: its CUDA "
            "provider cannot load the libraries"
        )
        return problem, f"pip uninstall -y onnxruntime-gpu && {gpu_extra(host.torch_major)}"
    if host.gpu_visible and not any(p in ort.available for p in probes.GPU_PROVIDERS):
        return ("the CPU build of onnxruntime on a GPU host", f"pip uninstall -y onnxruntime && {gpu_extra(want)}")
    failed = {r.provider: r.error for r in ort.runs if not r.ran}
    cuda = "CUDAExecutionProvider"
    if cuda in failed:
        fix = (
            f"install its CUDA {want} libraries: pip install 'onnxruntime-gpu[cuda,cudnn]' (the gpu-cu{want} extra "
            "does), or call onnxruntime.preload_dlls() / import torch before the session (docs/gpu-audit-status.md)"
        )
        return f"{cuda} is available but a session on it {failed[cuda]}", fix
    if "CPUExecutionProvider" in failed:
        return f"even a CPU session failed: {failed['CPUExecutionProvider']}", "reinstall onnxruntime"
    return "", ""


def export_checks(run: Run, host: Host) -> list[Check]:
    """Whether ``run`` has an export, and an engine for this GPU (and TensorRT version)."""
    name = run.ref.name
    if not is_exported(run):
        return [
            Check(
                "export",
                f"run {name}: not exported",
                f"run {name} has no export (no model.onnx, no engine)",
                f"tthf-export --run {run.ref.run_id}" + (" --require-engine" if host.target else ""),
            )
        ]
    manifest = Manifest.read(run)
    onnx = [a for a in manifest.artifacts if a.endswith(".onnx")]
    engines = manifest.engines()
    found = f"run {name}: {', '.join(onnx) or 'no ONNX'}; engines: {', '.join(engines) or 'none'}"
    if host.target is None:
        return [Check("engine", f"{found}; no GPU target here, so no engine applies ({host.target_reason})")]
    want = host.target.engine_filename()
    if want not in engines:
        return [
            Check(
                "engine",
                f"{found}; none for this GPU ({want}): tthf-run builds it on first use, or now with "
                f"tthf-export --run {run.ref.run_id} --require-engine",
            )
        ]
    built_on = manifest.artifacts[want].get("gpu_name")
    if built_on and built_on != host.target.gpu_name:
        return [
            Check(
                "engine",
                found,
                f"{want} was built on {built_on}, this GPU is {host.target.gpu_name} (same "
                "architecture, but engines are not portable across GPU models)",
                f"rebuild it here: tthf-export --run {run.ref.run_id} --require-engine",
            )
        ]
    return [Check("engine", f"{found}; {want} was built for this GPU")]


# ---------------------------------------------------------------------------------------
# the verdict


@dataclass
class Placement:
    runs_as: str | None
    device: str | None
    detail: str


def infer_placement(backend: str, host: Host) -> Placement:
    """Where ``backend`` would run for an exported run, from its spec and the probes of the libraries it needs."""
    if backend == "auto":
        for spec in auto_order(host.torch.available):
            placed = infer_placement(spec.name, host)
            if placed.device:
                return placed
        return infer_placement(fallback(host.torch.available).name, host)
    spec = REGISTRY[backend]
    places = [LIBRARIES.get(package, _imports(package))(spec, host) for package in spec.needs.packages]
    missing = next((p for p in places if p.device is None), None)
    if missing:
        return missing
    if (
        spec.device == "cpu"
        and spec.precision == "bf16"
        and not (host.cpu["features"].get("AVX512-BF16") or host.cpu["features"].get("AMX-BF16"))
    ):
        return Placement(None, None, "this CPU has no native bf16 (AVX-512 BF16 or AMX)")
    return places[0] if places else _on_device(spec, host, "needs no library")


def torch_placement(spec: BackendSpec, host: Host) -> Placement:
    if spec.device == "cpu":
        return Placement(spec.name, "cpu", f"the PyTorch reference, {spec.precision} on the CPU")
    return _on_device(spec, host, f"the PyTorch network on {host.torch.device} under {spec.precision} autocast")


def onnxruntime_placement(spec: BackendSpec, host: Host) -> Placement:
    ort = host.onnxruntime
    for provider in probes.ORT_PROVIDERS:
        if ort.ran(provider):
            device = "cpu" if provider == "CPUExecutionProvider" else "gpu"
            return Placement(spec.name, device, f"a session runs on {provider}")
    return Placement(None, None, f"no ONNX Runtime session runs here ({ort.error or 'every provider failed'})")


def openvino_placement(spec: BackendSpec, host: Host) -> Placement:
    if importlib.util.find_spec("openvino") is None:
        return Placement(None, None, "the openvino package is not installed (pip install 'tthf[cpu]')")
    return Placement(spec.name, "cpu", "OpenVINO's CPU plugin")


def tensorrt_placement(spec: BackendSpec, host: Host) -> Placement:
    if host.target is None:
        return Placement(None, None, host.target_reason)
    if host.tensorrt.starts is False:
        return Placement(None, None, f"TensorRT cannot start CUDA: {host.tensorrt.error}")
    return Placement(spec.name, "gpu", f"TensorRT {host.target.tensorrt_version} on {host.target.gpu_name}")


def _on_device(spec: BackendSpec, host: Host, detail: str) -> Placement:
    if spec.device == "cuda" and not host.torch.available:
        return Placement(None, None, "torch sees no CUDA device (a CPU build of torch, or no GPU)")
    return Placement(spec.name, "gpu" if spec.device == "cuda" else "cpu", detail)


def _imports(package: str) -> Callable[[BackendSpec, Host], Placement]:
    """The probe of a library with none of its own: whether it imports, and a CUDA torch for a GPU backend."""

    def placement(spec: BackendSpec, host: Host) -> Placement:
        if importlib.util.find_spec(package) is None:
            return Placement(None, None, f"the {package} package is not installed")
        return _on_device(spec, host, f"{package} imports")

    return placement


#: what each library a backend needs (``Needs.packages``) says about where it runs here
LIBRARIES: dict[str, Callable[[BackendSpec, Host], Placement]] = {
    "torch": torch_placement,
    "onnxruntime": onnxruntime_placement,
    "openvino": openvino_placement,
    "tensorrt": tensorrt_placement,
}


def open_placement(backend: str, run: Run, host: Host) -> Placement:
    """Where ``backend`` really runs for ``run``: opened as tthf-run opens it (a missing engine is not built)."""
    try:
        opened = open_backend(run, backend)
    except NotExportedError as exc:
        asked = auto_order(host.torch.available) if backend == "auto" else [REGISTRY[backend]]
        builds = next((spec for spec in asked if "rebuild" in spec.options), None)  # tthf-run passes rebuild
        if builds is not None and host.target is not None and is_exported(run):
            return Placement(builds.name, "gpu", f"no engine for this GPU yet: tthf-run builds it on first use ({exc})")
        return Placement(None, None, str(exc))
    except TthfError as exc:
        return Placement(None, None, str(exc))
    device = "gpu" if opened.device_engine() is not None else "cpu"
    return Placement(opened.name, device, opened.detail)


def verdict_fix(placed: Placement, expect: str, host: Host, problems: list[Check], run: Run | None) -> str:
    """The one action that makes the asked backend run on the expected device ("" when it already does)."""
    if placed.device == expect:
        return ""
    if placed.device is None:
        return cannot_run_fix(placed, host, problems, run)
    if expect == "cpu":
        return "hide the GPU with CUDA_VISIBLE_DEVICES= (empty), or pass --expect gpu"
    if not host.gpu_visible:
        return "no CUDA device is visible here: run on a GPU host (nvidia-smi must list the GPU), or pass --expect cpu"
    if problems:
        return problems[0].fix + (f" (and {len(problems) - 1} more mismatch(es) above)" if len(problems) > 1 else "")
    return "choose --backend tensorrt, or install the GPU build of ONNX Runtime (README, 'Install on a GPU host')"


def cannot_run_fix(placed: Placement, host: Host, problems: list[Check], run: Run | None) -> str:
    if run is not None and not is_exported(run):
        return f"export the run first: tthf-export --run {run.ref.run_id}"
    if host.gpu_visible and problems:
        return problems[0].fix
    if "TensorRT" in placed.detail:
        return (
            "TensorRT needs a CUDA GPU: on a GPU host pip install 'tthf[gpu-cu12]' (CUDA 12) or 'tthf[gpu-cu13]' "
            "(CUDA 13); on this host choose --backend onnxruntime or torch"
        )
    if host.onnxruntime.version is None:
        return gpu_extra(host.wanted_major()) if host.gpu_visible else "pip install 'tthf[cpu]'"
    return placed.detail


def diagnose(
    run: Run | str | None = None, backend: str = "auto", expect: str | None = None, *, store: Store | str | None = None
) -> Report:
    """What this host can run, each mismatch with its fix, and whether ``backend`` runs on ``expect``.

    ``run`` is an opened run, or a run name (an id or a unique prefix) looked up in ``store``.
    ``expect`` defaults to gpu when the driver or torch sees a CUDA device, else cpu.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if expect is not None and expect not in EXPECT:
        raise UsageError(f"unknown device {expect!r} for --expect; choose cpu or gpu")
    if isinstance(run, str):
        if store is None:
            raise UsageError(f"run {run!r} given by name without a store; pass --store")
        run = Run.open(find_run(store, run))
    host = gather()
    checks = [
        cpu_check(host),
        gpu_check(host),
        driver_check(host),
        torch_check(host),
        tensorrt_check(host),
        onnxruntime_check(host),
    ]
    if run is not None:
        checks += export_checks(run, host)
    placed = open_placement(backend, run, host) if run is not None else infer_placement(backend, host)
    want = expect or ("gpu" if host.gpu_visible else "cpu")
    problems = [c for c in checks if c.problem]
    return Report(
        checks,
        backend,
        placed.runs_as,
        placed.device,
        placed.detail,
        want,
        verdict_fix(placed, want, host, problems, run),
        run.ref.name if run else None,
        dataclasses.asdict(host),
    )

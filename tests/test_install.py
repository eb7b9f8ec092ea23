"""The GPU extras agree on one CUDA major with each other, with the README's torch line and with the workflow.

A CUDA 13 onnxruntime-gpu beside a CUDA 12 torch runs silently on the CPU (finding 1 in
docs/gpu-audit-status.md), so each ``gpu-cuNN`` extra is resolved against PyPI with pip itself
(``pip install --dry-run --no-deps --report``) and the CUDA major read from the chosen
wheels' metadata: TensorRT's from its ``tensorrt_cuNN_*`` requirements, onnxruntime-gpu's
from the CUDA runtime its ``[cuda]`` extra requires, at both ends of the allowed range.
The torch build is the PyTorch index named in the README (``/whl/cu128`` is CUDA 12).
The resolving tests need PyPI and skip, saying so, only when it cannot be reached.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
MAJORS = (12, 13)
PIP_TIMEOUT_S = 300


def extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def readme_lines() -> dict[int, str]:
    """CUDA major -> the README line that installs torch from the PyTorch index and then the gpu extra."""
    found = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        extra = re.search(r"tthf\[gpu-cu(\d+)\]", line)
        if extra and "download.pytorch.org/whl/cu" in line:
            found[int(extra.group(1))] = line
    return found


def torch_index_major(line: str) -> int:
    """``.../whl/cu128`` -> 12, ``.../whl/cu130`` -> 13 (the tag is the CUDA version without the dot)."""
    tag = re.search(r"download\.pytorch\.org/whl/cu(\d+)", line)
    assert tag, f"no PyTorch CUDA index in: {line}"
    return int(tag.group(1)[:-1])


def test_one_extra_per_cuda_major_and_no_ambiguous_gpu_extra() -> None:
    found = extras()
    assert "gpu" not in found, "a plain gpu extra cannot match both CUDA majors of torch"
    for major in MAJORS:
        names = {Requirement(r).name for r in found[f"gpu-cu{major}"]}
        assert names == {f"tensorrt-cu{major}", "onnxruntime-gpu"}
        ort = next(Requirement(r) for r in found[f"gpu-cu{major}"] if Requirement(r).name == "onnxruntime-gpu")
        assert ort.extras == {"cuda", "cudnn"}, "without them onnxruntime-gpu brings no CUDA libraries"
    assert not {"onnxruntime", "tthf[cpu]"} & set(found["testtools"]), "testtools must not bring the CPU onnxruntime"


def test_the_readme_installs_torch_of_the_same_cuda_major_as_the_extra() -> None:
    lines = readme_lines()
    assert sorted(lines) == list(MAJORS)
    for major, line in lines.items():
        assert torch_index_major(line) == major, line
        assert "--extra-index-url https://pypi.nvidia.com" in line, "TensorRT's libraries come from NVIDIA's index"


def test_the_gpu_workflow_installs_matching_torch_and_extra() -> None:
    workflow = (ROOT / ".github/workflows/gpu-bench.yml").read_text()
    torch_line = next(line for line in workflow.splitlines() if "download.pytorch.org/whl/cu" in line)
    extra = re.search(r"gpu-cu(\d+)", workflow)
    assert extra and int(extra.group(1)) == torch_index_major(torch_line)
    readme_torch = re.search(r"torch==([\w.]+)", readme_lines()[int(extra.group(1))])
    assert readme_torch and f"torch=={readme_torch.group(1)}" in torch_line, "README and workflow pin different torch"


# ---------------------------------------------------------------------------------------
# resolved against PyPI


@cache
def pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15).close()
    except OSError:
        return False
    return True


needs_pypi = pytest.mark.skipif("not pypi_reachable()", reason="PyPI (https://pypi.org) cannot be reached from here")


def pip(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stderr[-2000:]}"
    return proc.stdout


def resolve(requirement: str) -> dict[str, Any]:
    """The metadata of the one distribution pip would install for ``requirement`` (its dependencies not resolved)."""
    report = json.loads(
        pip("install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet", "--report", "-", requirement)
    )
    (item,) = report["install"]
    return item["metadata"]


def requires(metadata: dict[str, Any], extras_: set[str]) -> list[Requirement]:
    """The wheel's requirements that apply with ``extras_`` selected."""
    out = []
    for text in metadata.get("requires_dist") or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras_ | {""}):
            out.append(req)
    return out


def tensorrt_cuda_major(metadata: dict[str, Any]) -> int:
    """``tensorrt-cuNN`` requires ``tensorrt_cuNN_libs`` and ``tensorrt_cuNN_bindings`` of its own version."""
    majors = {
        int(m.group(1))
        for r in requires(metadata, set())
        if (m := re.fullmatch(r"tensorrt-cu(\d+)-(libs|bindings)", canonicalize_name(r.name)))
    }
    assert len(majors) == 1, metadata.get("requires_dist")
    return majors.pop()


def ort_cuda_major(metadata: dict[str, Any]) -> int:
    """The CUDA major of the runtime that onnxruntime-gpu's ``[cuda]`` extra installs."""
    for req in requires(metadata, {"cuda", "cudnn"}):
        m = re.fullmatch(r"nvidia-cuda-runtime(?:-cu(\d+))?", canonicalize_name(req.name))
        if m:
            return int(m.group(1) or str(next(iter(req.specifier)).version).split(".")[0])
    raise AssertionError(
        f"onnxruntime-gpu {metadata['version']} names no CUDA runtime: {metadata.get('requires_dist')}"
    )


def allowed_versions(requirement: Requirement) -> list[Version]:
    listing = pip("index", "versions", requirement.name)
    versions = re.search(r"Available versions: (.*)", listing)
    assert versions, listing
    return sorted(v for v in map(Version, versions.group(1).split(", ")) if requirement.specifier.contains(v))


@pytest.mark.slow
@needs_pypi
@pytest.mark.parametrize("major", MAJORS)
def test_each_gpu_extra_resolves_to_one_cuda_major(major: int) -> None:
    lines = readme_lines()
    found = {}
    for text in extras()[f"gpu-cu{major}"]:
        req = Requirement(text)
        if req.name.startswith("tensorrt"):
            found[f"{req.name} (newest allowed)"] = tensorrt_cuda_major(resolve(text))
            continue
        allowed = allowed_versions(req)  # both ends of the range: the CUDA major changed at 1.27
        assert allowed, f"no onnxruntime-gpu release satisfies {req.specifier}"
        for version in {allowed[0], allowed[-1]}:
            found[f"onnxruntime-gpu {version}"] = ort_cuda_major(resolve(f"onnxruntime-gpu=={version}"))
    found["torch (README's PyTorch index)"] = torch_index_major(lines[major])
    assert set(found.values()) == {major}, found


@pytest.mark.slow
@needs_pypi
def test_the_unpinned_tensorrt_metapackage_is_cuda_13() -> None:
    """Why the extras name tensorrt-cu12 / tensorrt-cu13: plain ``tensorrt`` follows NVIDIA's newest CUDA."""
    metadata = resolve("tensorrt")
    (req,) = requires(metadata, set())
    assert canonicalize_name(req.name) == "tensorrt-cu13"

"""Every TensorRT Python name our code uses exists in NVIDIA's current bindings.

CI has no GPU, so the engine code never runs there. This test downloads the
``tensorrt-cu13-bindings`` wheel (about 1.3 MB, no CUDA libraries) with pip, reads the
strings of its compiled ``tensorrt.so`` (pybind11 registers every class, method,
property and enum value by name) and its Python ``__init__.py``, and checks each name
that export/tensorrt_build.py and engine/runtime/backends/tensorrt.py take from ``tensorrt``: ``trt.X.Y`` chains, and the
methods and properties called on the objects TensorRT hands back (builder, network,
parser, config, profile, runtime, engine, context, timing cache). It also checks that
the TensorRT-11-removed ``BuilderFlag.FP16`` is neither used nor present, which shows
that the lookup can fail. Skipped, with the reason, when pip cannot reach the index.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "export" / "tensorrt_build.py", REPO / "engine" / "runtime" / "backends" / "tensorrt.py"]
WHEEL = "tensorrt-cu13-bindings"
# Local names that hold TensorRT objects in SOURCES; attributes read on them are TensorRT API.
TRT_OBJECTS = {
    "builder",
    "network",
    "parser",
    "config",
    "profile",
    "cache",
    "timing",
    "engine",
    "context",
    "runtime",
    "self.engine",
    "self.context",
    "self._runtime",
    "self._trt",
}
# Attributes of those objects that are ours or Python's, not TensorRT's.
NOT_TRT = {"__version__"}
CORE = {
    "Builder",
    "OnnxParser",
    "Runtime",
    "create_network",
    "STRONGLY_TYPED",
    "create_builder_config",
    "set_memory_pool_limit",
    "create_optimization_profile",
    "set_shape",
    "add_optimization_profile",
    "create_timing_cache",
    "set_timing_cache",
    "get_timing_cache",
    "serialize",
    "build_serialized_network",
    "deserialize_cuda_engine",
    "create_execution_context",
    "set_input_shape",
    "set_tensor_address",
    "execute_async_v3",
    "num_io_tensors",
    "get_tensor_name",
    "set_optimization_profile_async",
}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def used_names(path: Path) -> set[str]:
    """TensorRT names used in ``path``: parts of ``trt.*`` chains and attributes of TensorRT objects."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        chain = _dotted(node)
        if chain and (chain.startswith("trt.") or chain.startswith("self._trt.")):
            names.update(chain.split(".")[1 if chain.startswith("trt.") else 2 :])
            continue
        owner = _dotted(node.value)
        if owner in TRT_OBJECTS:
            names.add(node.attr)
    return names - NOT_TRT


@pytest.fixture(scope="module")
def bindings(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], str]:
    """(strings of tensorrt.so, __init__.py source) of the newest bindings wheel."""
    dest = tmp_path_factory.mktemp("trt-wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(dest),
            WHEEL,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    wheels = list(dest.glob("*.whl"))
    if proc.returncode or not wheels:
        pytest.skip(f"pip could not download {WHEEL} (no package index reachable?): {proc.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as zf:
        so = next(n for n in zf.namelist() if re.search(r"/tensorrt[^/]*\.so$", n))
        init = next(n for n in zf.namelist() if n.endswith("/__init__.py") and n.count("/") == 1)
        blob, source = zf.read(so), zf.read(init).decode()
    # NUL-terminated identifiers; the linker merges a string into the tail of a longer one
    # ("Builder" lives at the end of "IBuilder"), so a name may be any identifier's suffix.
    strings = {m.decode() for m in re.findall(rb"[A-Za-z_][A-Za-z0-9_]{2,}(?=\x00)", blob)}
    return strings, source


def present(name: str, strings: set[str], source: str) -> bool:
    if re.search(rf"^(def|class) {name}\b|^{name} = ", source, re.M):
        return True
    return any(s.endswith(name) for s in strings)


def test_sources_use_the_core_api() -> None:
    used = set().union(*(used_names(p) for p in SOURCES))
    assert used >= CORE, f"the extractor missed {sorted(CORE - used)}: update TRT_OBJECTS or the sources"


def test_fp16_builder_flag_is_not_used() -> None:
    for path in SOURCES:
        assert "BuilderFlag" not in path.read_text(), f"{path}: TensorRT 11 networks are strongly typed, no FP16 flag"


@pytest.mark.slow
def test_every_used_name_exists_in_tensorrt_bindings(bindings: tuple[set[str], str]) -> None:
    strings, source = bindings
    used = set().union(*(used_names(p) for p in SOURCES))
    missing = sorted(n for n in used if not present(n, strings, source))
    assert not missing, f"not in {WHEEL}: {missing}"
    # The check can fail: TensorRT 11 removed the FP16 builder flag and weak typing.
    assert not present("FP16", strings, source)
    assert not present("OBEY_PRECISION_CONSTRAINTS", strings, source)

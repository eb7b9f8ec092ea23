"""Every TensorRT Python name our code uses exists in NVIDIA's current bindings.

CI has no GPU, so the engine code never runs there. This test downloads the
``tensorrt-cu13-bindings`` wheel (about 1.3 MB, no CUDA libraries) with pip, reads the
strings of its compiled ``tensorrt.so`` (pybind11 registers every class, method,
property and enum value by name) and its Python ``__init__.py``, and checks each name
that export/tensorrt_build.py and engine/runtime/backends/tensorrt.py take from ``tensorrt``: ``trt.X.Y`` chains, and the
methods and properties called on the objects TensorRT hands back (builder, network,
parser, config, profile, runtime, engine, context, timing cache). It also checks that
the TensorRT-11-removed ``BuilderFlag.FP16`` is neither used nor present, which shows
that the lookup can fail. Skipped, with the reason, when pip cannot reach the index
(pip's own HTTP cache serves a repeat download).

A name counts as present only by exact evidence (``present``): an identifier of the ``.so``
spelled exactly so, ``"I" + name`` (a class pybind registers under its Python name whose
literal the linker merged into the C++ one, ``Logger`` -> ``ILogger``), a name the Python
``__init__.py`` defines or refers to (``def nptype``, ``Builder.__enter__ = ...``), or for the
few names with none of these (properties and enum values whose literal was merged into a
longer string) a fixed piece of their docstring (``DOCUMENTED``). Suffixes do not count:
``INPUT`` is not shown by ``ATTENTION_INPUT``, nor ``num_errors`` by ``get_num_errors``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
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
#: names with no identifier of their own in the bindings: the text in the .so that documents each
DOCUMENTED = {
    "num_errors": ":attr:`num_errors`",  # IParser's read-only property (pyOnnx.cpp)
    "INPUT": "Tensor is input to the engine.",  # TensorIOMode.INPUT's docstring
    "OUTPUT": "Tensor is output to the engine.",  # TensorIOMode.OUTPUT's docstring (sic, "to")
    "serialize": "ITimingCacheDocL9serializeE",  # tensorrt::ITimingCacheDoc::serialize, mangled: exact length
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


@dataclass(frozen=True)
class Bindings:
    """What one bindings wheel shows of its Python API."""

    identifiers: set[str]  # NUL-terminated identifiers of tensorrt.so
    blob: bytes  # all of tensorrt.so, for the docstrings in DOCUMENTED
    init_names: set[str]  # names __init__.py defines or refers to

    @classmethod
    def of(cls, blob: bytes, init_source: str) -> Bindings:
        identifiers = {m.decode() for m in re.findall(rb"[A-Za-z_][A-Za-z0-9_]{2,}(?=\x00)", blob)}
        names = set()
        for node in ast.walk(ast.parse(init_source)):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
        return cls(identifiers, blob, names)


@pytest.fixture(scope="module")
def bindings(tmp_path_factory: pytest.TempPathFactory) -> Bindings:
    """The newest bindings wheel's tensorrt.so and __init__.py."""
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
        return Bindings.of(zf.read(so), zf.read(init).decode())


def present(name: str, found: Bindings) -> bool:
    """Whether ``name`` is exactly in the bindings (the rules are in the module docstring)."""
    if name in found.identifiers or f"I{name}" in found.identifiers or name in found.init_names:
        return True
    return name in DOCUMENTED and DOCUMENTED[name].encode() in found.blob


def test_sources_use_the_core_api() -> None:
    used = set().union(*(used_names(p) for p in SOURCES))
    assert used >= CORE, f"the extractor missed {sorted(CORE - used)}: update TRT_OBJECTS or the sources"


def test_fp16_builder_flag_is_not_used() -> None:
    for path in SOURCES:
        assert "BuilderFlag" not in path.read_text(), f"{path}: TensorRT 11 networks are strongly typed, no FP16 flag"


def test_present_needs_exact_evidence() -> None:
    """The rule on a made-up .so: suffixes of longer identifiers and bare docstring words do not count."""
    blob = b"\x00".join(
        [b"ATTENTION_INPUT", b"get_num_errors", b"ILogger", b"IExprBuilder", b"Tensor is output to the engine.", b""]
    )
    found = Bindings.of(blob, "from .tensorrt import *\nRuntime.__enter__ = common_enter\ndef nptype(t):\n    pass\n")
    assert present("Logger", found) and present("Runtime", found) and present("nptype", found)
    assert present("OUTPUT", found)  # its docstring
    assert not present("INPUT", found)  # only ATTENTION_INPUT, and no docstring
    assert not present("num_errors", found)  # only get_num_errors, and no docstring
    assert not present("Builder", found)  # only the tail of IExprBuilder
    assert not present("NPUT", found) and not present("errors", found)


@pytest.mark.slow
def test_every_used_name_exists_in_tensorrt_bindings(bindings: Bindings) -> None:
    used = set().union(*(used_names(p) for p in SOURCES))
    missing = sorted(n for n in used if not present(n, bindings))
    assert not missing, f"not in {WHEEL}: {missing}"


@pytest.mark.slow
def test_the_name_check_can_fail_on_the_real_bindings(bindings: Bindings) -> None:
    """TensorRT 11 removed the FP16 builder flag and weak typing; suffixes of real names do not pass."""
    assert not present("FP16", bindings)
    assert not present("OBEY_PRECISION_CONSTRAINTS", bindings)
    assert not present("NPUT", bindings)  # a suffix of INPUT, ATTENTION_INPUT, ...
    assert not present("errors", bindings)  # a suffix of num_errors, get_num_errors
    assert not present("Builder2", bindings)

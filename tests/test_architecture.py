"""The import rule of docs/architecture.md, checked on every module's AST (function-local imports too).

``cli`` -> ``export`` -> ``engine``; inside ``engine`` later stages import earlier ones
only, and the two stages of one rank (training, runtime) never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: source folder -> the package it is installed as (pyproject.toml's wheel.packages)
ROOTS = {"src/tthf": "tthf", "engine": "tthf.engine", "export": "tthf.export", "cli": "tthf.cli"}
#: (module prefix, rank): a module may import a lower rank, or its own unit; never a higher or an equal other one
RANKS = (
    ("tthf.errors", 0),
    ("tthf.engine._windows", 1),
    ("tthf.engine.config", 1),
    ("tthf.engine.store", 1),
    ("tthf.engine.windows", 2),
    ("tthf.engine.data", 3),
    ("tthf.engine.features", 4),
    ("tthf.engine.model", 5),
    ("tthf.engine.runs", 6),
    ("tthf.engine.predictions", 6),
    ("tthf.engine.artifacts", 7),
    ("tthf.engine.inference_manifest", 7),
    ("tthf.engine.evaluation", 8),
    ("tthf.engine.training", 9),
    ("tthf.engine.runtime", 9),
    ("tthf.engine.testing", 10),
    ("tthf.engine", 10),
    ("tthf.export", 11),
    ("tthf.demo", 12),
    ("tthf.cli", 13),
    ("tthf", 0),  # the root package: its docstring and version
)


def unit(module: str) -> tuple[str, int]:
    """The rank entry a module belongs to: the longest matching prefix."""
    for prefix, rank in sorted(RANKS, key=lambda r: -len(r[0])):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    raise AssertionError(f"{module} has no rank in RANKS; add its stage to RANKS and docs/architecture.md")


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in ROOTS.items():
        base = REPO / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            if folder == "src/tthf" and rel.parts[0] in ("engine", "export", "cli"):
                continue  # the dev-layout symlinks
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported tthf module) for every import in the file, wherever it is."""
    out = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "tthf"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] != "tthf":
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.append((node.lineno, target if target in known else base))
    return out


def violations(source: dict[str, Path]) -> list[str]:
    known = set(source) | {"tthf.engine._windows"}
    bad = []
    for module, path in sorted(source.items()):
        mine, my_rank = unit(module)
        for line, target in imports(path, module, known):
            theirs, their_rank = unit(target)
            if theirs == mine or their_rank < my_rank:
                continue
            where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            bad.append(f"{where}:{line}: {module} (rank {my_rank}) imports {target} (rank {their_rank})")
    return bad


def test_imports_point_one_way() -> None:
    assert violations(modules()) == []


def test_every_module_has_a_stage() -> None:
    for module in modules():
        unit(module)


@pytest.mark.parametrize(
    "code",
    [
        "from tthf.export.api import export_run",  # engine importing export
        "def later():\n    import tthf.cli._common\n",  # even inside a function
        "from tthf.engine.runtime import batch",  # training importing runtime (same rank)
    ],
)
def test_the_checker_catches_a_wrong_import(tmp_path: Path, code: str) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(code)
    source = modules()
    source["tthf.engine.training.bad"] = bad
    found = [v for v in violations(source) if "training.bad" in v]
    assert len(found) == 1, found


def test_the_package_faces_are_lazy_and_complete() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tthf, tthf.engine, tthf.export\n"
        "heavy = [m for m in ('torch', 'polars', 'onnx', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "for name in tthf.engine.__all__: getattr(tthf.engine, name)\n"
        "for name in tthf.export.__all__: getattr(tthf.export, name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

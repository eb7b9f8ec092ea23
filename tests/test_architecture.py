"""The import rules of docs/architecture.md, checked on every module's AST (function-local imports too).

``bench`` -> ``cli`` -> ``export`` -> ``engine``; inside ``engine`` later stages import earlier
ones only, and the two stages of one rank (training, runtime) never import each other. Within
a stage, imports may go either way but never round in a circle. bench/ also names only what
exists: each ``from tthf.x import name`` there is resolved by importing ``tthf.x``, so a
function renamed in tthf fails here, not on the first GPU host.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: source folder -> the package it is installed as (pyproject.toml's wheel.packages); bench/ is no
#: package: its modules run with bench/ on sys.path and import each other by their top-level names
#: (``import benchlib``), which ``checked`` maps to ``bench.<name>``
ROOTS = {"src/tthf": "tthf", "engine": "tthf.engine", "export": "tthf.export", "cli": "tthf.cli", "bench": "bench"}
#: (module prefix, rank): a module may import a lower rank, or its own unit; never a higher or an equal other one
RANKS = (
    ("tthf.errors", 0),
    ("tthf.engine._kernels", 1),
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
    ("tthf.engine.explain", 10),
    ("tthf.engine.serving", 10),  # the live service over the real-time predictor
    ("tthf.engine.testing", 10),
    ("tthf.engine.daily", 10),  # tthf-daily: freshness, runtime and evaluation in one call
    ("tthf.engine", 10),
    ("tthf.export", 11),
    ("tthf.demo", 12),
    ("tthf.cli", 13),
    ("bench", 14),  # the benchmarks and GPU checks: they may import anything, nothing imports them
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


def checked(name: str, known: set[str]) -> str | None:
    """The checked module an absolute import names (a bench module by its top-level name), or None."""
    top = name.split(".")[0]
    if top in ("tthf", "bench"):
        return name
    if f"bench.{top}" in known:
        return f"bench.{name}"
    return None


def imports(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported tthf or bench module) for every import in the file, wherever it is."""
    out = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, target) for a in node.names if (target := checked(a.name, known))]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base: str | None = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = checked(node.module or "", known)
            if base is None:
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.append((node.lineno, target if target in known else base))
    return out


def shown(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def violations(source: dict[str, Path]) -> list[str]:
    known = set(source) | {"tthf.engine._kernels"}
    bad = []
    for module, path in sorted(source.items()):
        mine, my_rank = unit(module)
        for line, target in imports(path, module, known):
            theirs, their_rank = unit(target)
            if theirs == mine or their_rank < my_rank:
                continue
            bad.append(f"{shown(path)}:{line}: {module} (rank {my_rank}) imports {target} (rank {their_rank})")
    return bad


def import_graph(source: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {tthf or bench module it imports: the line of the first such import}, wherever the import is."""
    known = set(source) | {"tthf.engine._kernels"}
    graph: dict[str, dict[str, int]] = {}
    for module, path in source.items():
        edges: dict[str, int] = {}
        for line, target in imports(path, module, known):
            if target in source and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def cycles(source: dict[str, Path]) -> list[str]:
    """Every import circle: each set of modules that reach each other through imports, with those imports.

    The strongly connected components of the import graph (Tarjan); one of two or more modules is a circle.
    """
    graph = import_graph(source)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in graph[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return [
        "; ".join(
            f"{a} (line {graph[a][b]}) imports {b}" for a in component for b in sorted(graph[a]) if b in component
        )
        for component in found
    ]


def missing_names(paths: list[Path]) -> list[str]:
    """``import tthf.x`` and ``from tthf.x import name`` that name no module or attribute, resolved by importing."""
    bad = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                wanted = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                wanted = [(node.module, a.name) for a in node.names if a.name != "*"]
            else:
                continue
            for target, name in wanted:
                if target.split(".")[0] == "tthf" and not exists(target, name):
                    bad.append(f"{shown(path)}:{node.lineno}: {target}{'' if name is None else ' has no ' + name}")
    return bad


def exists(module: str, name: str | None) -> bool:
    """Whether ``module`` imports and (when given) has ``name``: an attribute or a submodule."""
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            return False  # the tthf module itself is missing; a missing third-party module fails the test
        raise
    if name is None or hasattr(found, name):
        return True
    return hasattr(found, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None


def bench_modules() -> dict[str, Path]:
    return {module: path for module, path in modules().items() if unit(module)[0] == "bench"}


def test_imports_point_one_way() -> None:
    assert violations(modules()) == []


def test_no_import_circle() -> None:
    assert cycles(modules()) == []


def test_every_module_has_a_stage() -> None:
    for module in modules():
        unit(module)


@pytest.mark.parametrize(
    "code",
    [
        "from tthf.export.api import export_run",  # engine importing export
        "def later():\n    import tthf.cli._common\n",  # even inside a function
        "from tthf.engine.runtime import batch",  # training importing runtime (same rank)
        "import benchlib",  # the library importing a benchmark module, by its top-level name
        "from baseline.parity import compare",  # or a module of bench's baseline package
        "from bench import gpu_compare",  # or bench as a namespace package
    ],
)
def test_the_checker_catches_a_wrong_import(tmp_path: Path, code: str) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(code)
    source = modules()
    source["tthf.engine.training.bad"] = bad
    found = [v for v in violations(source) if "training.bad" in v]
    assert len(found) == 1, found


@pytest.mark.parametrize(
    "second",
    [
        "from tthf.engine.runtime.planted_a import x\n",
        "def later():\n    from tthf.engine.runtime import planted_a\n",  # closed inside a function
    ],
)
def test_the_checker_catches_an_import_circle(tmp_path: Path, second: str) -> None:
    source = modules()
    planted = {"planted_a": "from tthf.engine.runtime import batch, planted_b\nx = 1\n", "planted_b": second}
    for name, code in planted.items():
        (tmp_path / f"{name}.py").write_text(code)
        source[f"tthf.engine.runtime.{name}"] = tmp_path / f"{name}.py"
    assert violations(source) == []  # one stage: the rank rule lets these imports through
    assert cycles(source) == [
        "tthf.engine.runtime.planted_a (line 1) imports tthf.engine.runtime.planted_b; "
        f"tthf.engine.runtime.planted_b (line {second.count(chr(10))}) imports tthf.engine.runtime.planted_a"
    ]


def test_bench_names_what_exists() -> None:
    assert bench_modules(), "no bench modules found: ROOTS lost bench/"
    assert missing_names(list(bench_modules().values())) == []


def test_the_name_check_catches_a_renamed_import(tmp_path: Path) -> None:
    bad = tmp_path / "bench_bad.py"
    bad.write_text(
        "from tthf.engine import runs\n"  # a submodule: fine
        "from tthf.engine.runtime.day import DayPredictor, DayPredicter\n"  # a renamed class
        "def later():\n    from tthf.engine.no_such_module import read_day\n"  # inside a function too
        "import tthf.engine.no_such_package.windows\n"
    )
    found = sorted(v.split(": ", 1)[1] for v in missing_names([bad]))
    assert found == [
        "tthf.engine.no_such_module has no read_day",
        "tthf.engine.no_such_package.windows",
        "tthf.engine.runtime.day has no DayPredicter",
    ], found


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

"""Every repository path named in the docs, the README, the comments and the code exists.

A reorganization moves files; the text that names them does not move with them. This test
reads that text and reports each dead reference as ``file:line: path``.

What is read, line by line: docs/*.md, README.md and bench/README.md, and every .py, .cpp,
.hpp, .sh, .toml and .yml file in the repository's folders (``TOP_FOLDERS``) plus
pyproject.toml, CMakeLists.txt and the extension-less shell scripts of .ci/. The whole text
is read, not only docstrings and comments: a skip reason or an error message that names a
file is read by people too, and code names no path by accident (a path needs a folder, a
``/`` and an extension, below).

What counts as a repository path: a run of letters, digits and ``_ . - /`` that

- starts with one of the repository's top-level folders and ``/`` (``engine/``, ``tests/``,
  ``.ci/``, ... from ``TOP_FOLDERS``), or is one of its top-level files (``TOP_FILES``);
- does not continue a longer path (no path character or ``/`` right before it): ``/tmp/x``,
  ``~/x``, ``runs/demo/.../export/model.onnx`` and URLs lie outside the repository;
- names a file (its last part has an extension, or it lies in .ci/, whose scripts have
  none) or a folder (it ends in ``/``); a bare ``engine/runtime`` reads as prose and is not
  checked.

The run ends at any other character, so a ``path:line`` or ``path::test`` suffix is not part
of it; trailing dots end a sentence, not a name. Templates and globs are skipped: a run
followed by ``*``, ``{``, ``<``, ``[`` or ``$`` (``bench/bench_*.py``, ``tests/<file>``), or
containing ``YYYY``.

What is meant otherwise, and so not checked:

- run-folder files: ``export/`` is a repository folder and a folder of every run. A path
  ``export/NAME``, where NAME is a file name that engine/runs.py defines (``manifest.json``,
  ``model.onnx``, ...; read from its constants, not imported), names a run's file; the
  repository's export/ holds Python modules only. Run-folder paths without ``export/``
  (``inference/...``, ``evaluation/...``) never start with a repository folder.
- columns of historical mapping tables (``HISTORICAL_COLUMNS``): a markdown table column
  headed by one of those names lists the paths of an older layout on purpose.
- ``EXEMPT``: the few other paths named on purpose although the repository does not hold
  them, each with its reason.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP_FOLDERS = (".ci", ".github", "bench", "cli", "csrc", "docs", "engine", "export", "src", "tests")
TOP_FILES = ("CMakeLists.txt", "README.md", "pyproject.toml")
#: the documents, by glob from the repository root
DOCS = ("docs/*.md", "README.md", "bench/README.md")
SOURCE_SUFFIXES = (".py", ".cpp", ".hpp", ".sh", ".toml", ".yml")
#: path -> why it is named although the repository does not hold it
EXEMPT = {
    "bench/GPU_RESULTS.md": "written by bench/gpu_report.py on a GPU host (the gpu-bench workflow), never committed",
}
#: header of a markdown table column -> why its paths need not exist
HISTORICAL_COLUMNS = {
    "audit file": "docs/gpu-audit-status.md maps the GPU audit's file names (commit ce51192) to today's",
}

_PATH = re.compile(
    r"(?<![\w./-])(?:(?:"
    + "|".join(map(re.escape, TOP_FOLDERS))
    + r")/[\w./-]*|(?:"
    + "|".join(map(re.escape, TOP_FILES))
    + r")(?![\w./-]))"
)
_TEMPLATE_NEXT = tuple("*{<[$")


def paths_in(line: str) -> Iterator[str]:
    """The repository paths named in one line of text (the rules are in the module docstring)."""
    for match in _PATH.finditer(line):
        token = match.group().rstrip(".")
        if line.startswith(_TEMPLATE_NEXT, match.end()) or "YYYY" in token:
            continue
        if token.endswith("/") or "." in token.rsplit("/", 1)[-1].lstrip(".") or token.startswith(".ci/"):
            yield token


@cache
def run_folder_paths() -> frozenset[str]:
    """``export/NAME`` for each file name engine/runs.py defines, read from its module-level constants."""
    values: dict[str, str] = {}
    for node in ast.parse((REPO / "engine" / "runs.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            value = node.value
            parts = value.values if isinstance(value, ast.JoinedStr) else [value]
            text = [_constant(part, values) for part in parts]
            if all(t is not None for t in text):
                values[node.targets[0].id] = "".join(t for t in text if t)
    names = {v.rsplit("/", 1)[-1] for v in values.values() if "." in v}
    return frozenset(f"{values['EXPORT_DIR']}/{name}" for name in names)


def _constant(node: ast.expr, values: dict[str, str]) -> str | None:
    """The text of a string constant or of an f-string part naming an earlier constant; None otherwise."""
    if isinstance(node, ast.FormattedValue) and isinstance(node.value, ast.Name):
        return values.get(node.value.id)
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def readable_lines(text: str, markdown: bool) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line; in markdown, without the cells of historical columns."""
    skipped: set[int] = set()
    previous = ""
    for number, line in enumerate(text.splitlines(), 1):
        if markdown and line.startswith("|"):
            cells = line.split("|")
            if not previous.startswith("|"):  # a table's header
                skipped = {i for i, cell in enumerate(cells) if cell.strip() in HISTORICAL_COLUMNS}
            line = "|".join("" if i in skipped else cell for i, cell in enumerate(cells))
        previous = line
        yield number, line


def dead_references(name: str, text: str) -> list[str]:
    """``name:line: path`` for each repository path named in ``text`` that the repository does not hold."""
    dead = []
    for number, line in readable_lines(text, markdown=name.endswith(".md")):
        for path in paths_in(line):
            if path in EXEMPT or path in run_folder_paths():
                continue
            target = REPO / path
            if not (target.is_dir() if path.endswith("/") else target.exists()):
                dead.append(f"{name}:{number}: {path}")
    return dead


def read_files() -> list[Path]:
    """The documents and source files whose text is read (build outputs and dev-layout links aside)."""
    files = {p for pattern in DOCS for p in REPO.glob(pattern)} | {REPO / "pyproject.toml", REPO / "CMakeLists.txt"}
    for folder in TOP_FOLDERS:
        for path in (REPO / folder).rglob("*"):  # rglob does not enter the src/tthf/* symlinks
            ci_script = folder == ".ci" and not path.suffix
            if path.is_file() and (path.suffix in SOURCE_SUFFIXES or ci_script):
                files.add(path)
    return sorted(files)


def test_every_named_repository_path_exists() -> None:
    dead = [d for path in read_files() for d in dead_references(path.relative_to(REPO).as_posix(), path.read_text())]
    assert not dead, "paths that the repository does not hold (fix the reference, or see EXEMPT):\n" + "\n".join(dead)


def test_the_files_read_include_docs_sources_and_ci_scripts() -> None:
    names = {p.relative_to(REPO).as_posix() for p in read_files()}
    expected = {"README.md", "bench/README.md", "docs/architecture.md", "engine/runs.py", "csrc/features.cpp"}
    assert expected | {".ci/dev", ".ci/sanitize.sh", "pyproject.toml", ".github/workflows/ci.yml"} <= names
    assert not any(n.startswith(("build/", "src/tthf/engine/")) for n in names)


# A missing path is built, not written, so that this file itself names no dead path.
MISSING = "/".join(("engine", "no_such_module.py"))


def test_a_missing_path_is_reported_with_file_and_line_and_an_exempted_one_is_not(tmp_path: Path) -> None:
    note = tmp_path / "note.md"
    note.write_text(
        "# A note\n"
        f"The code is in {MISSING}:12, next to engine/runs.py.\n"
        "Generated: bench/GPU_RESULTS.md. A run's export/manifest.json and export/model_fp16.onnx.\n"
        "Globs and templates: bench/bench_*.py, tests/<file>, docs/{name}.md, outside: /tmp/engine/x.py.\n"
        "| audit file | current file |\n| --- | --- |\n"
        f"| `{MISSING}` | `engine/runs.py` |\n"
        f"| `engine/runs.py` | `{MISSING}` |\n"
    )
    assert dead_references("note.md", note.read_text()) == [f"note.md:2: {MISSING}", f"note.md:8: {MISSING}"]


def test_a_missing_path_in_python_is_reported_whatever_its_context() -> None:
    source = f'"""Moved to {MISSING}."""\n\n# see {MISSING}::test_x\nreason = "covered by {MISSING}"\n'
    assert dead_references("m.py", source) == [f"m.py:{n}: {MISSING}" for n in (1, 3, 4)]


@pytest.mark.parametrize(
    ("line", "paths"),
    [
        ("see engine/runs.py:42.", ["engine/runs.py"]),
        ("tests/test_runs.py::test_find, then README.md", ["tests/test_runs.py", "README.md"]),
        ("bench/README.md and the csrc/ folder", ["bench/README.md", "csrc/"]),
        (".ci/dev and .ci/sanitize.sh; cli/run, the export/api", [".ci/dev", ".ci/sanitize.sh"]),
        ("engine/runtime and engine/runtime/", ["engine/runtime/"]),
        ("bench/bench_*.py, tests/<file>, docs/{x}.md, src/$pkg, docs/YYYY-MM.md", []),
        ("/tmp/engine/x.py, ~/docs/a.md, runs/a/export/model.onnx, https://x.org/docs/a.md", []),
        ("the_README.md, README.mdx, tthf.engine.runs", []),
    ],
)
def test_what_counts_as_a_repository_path(line: str, paths: list[str]) -> None:
    assert list(paths_in(line)) == paths


def test_run_folder_names_come_from_engine_runs() -> None:
    assert {"export/manifest.json", "export/model.onnx", "export/model_fp16.onnx"} <= run_folder_paths()
    assert not any((REPO / p).exists() for p in run_folder_paths())  # none of them names a repository file


@pytest.mark.parametrize("path", sorted(EXEMPT))
def test_every_exemption_is_missing_and_named(path: str) -> None:
    """An exemption of a file that now exists, or that nothing names, is stale: remove it."""
    assert not (REPO / path).exists()
    assert any(path in paths_in(line) for p in read_files() for line in p.read_text().splitlines())


@pytest.mark.parametrize("header", sorted(HISTORICAL_COLUMNS))
def test_every_historical_column_heads_a_table(header: str) -> None:
    """A historical column that no table has any more is stale: remove it."""
    header_cell = re.compile(rf"^\|(.*\|)? *{re.escape(header)} *\|", re.M)
    assert any(header_cell.search(p.read_text()) for p in read_files() if p.suffix == ".md")

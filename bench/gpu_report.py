"""Write bench/GPU_RESULTS.md from what bench/gpu_check.sh collected, and decide its verdict.

    python bench/gpu_report.py WORKDIR OUT.md [--budget-s 300]

``WORKDIR`` holds the files gpu_check.sh wrote: ``steps.tsv`` (step, exit code, seconds,
command), ``doctor.json`` (``tthf-doctor --json``), ``gpu-tests.xml`` (pytest's JUnit XML
for ``-m gpu``), ``compare.json`` (bench/gpu_compare.py), ``overlap.json``
(bench/gpu_overlap.py: the ring's H2D / compute / D2H overlap from CUDA events) and
``gpu-bench.json`` (pytest-benchmark), and one ``<step>.log`` per step. Any missing file is reported as
missing. The verdict fails on a step that failed, on a ``gpu`` test that was skipped on
this GPU host (each one must run here), and on a total time over the budget. Exit code 0
when it passes, 1 when it does not; every number in the page comes from those files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUDGET_S = 300.0
LOG_TAIL = 40


@dataclass
class Step:
    name: str
    code: int
    seconds: float
    command: str


@dataclass
class TestRun:
    """``pytest -m gpu`` from its JUnit XML."""

    total: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "test: reason"

    @property
    def passed(self) -> int:
        return self.total - len(self.failed) - len(self.skipped)


def read_steps(path: Path) -> list[Step]:
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        name, code, seconds, command = line.split("\t", 3)
        steps.append(Step(name, int(code), float(seconds), command))
    return steps


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() and path.stat().st_size else None


def read_tests(path: Path) -> TestRun | None:
    if not path.exists():
        return None
    run = TestRun()
    for case in ET.parse(path).getroot().iter("testcase"):
        run.total += 1
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag, into in (("failure", run.failed), ("error", run.failed), ("skipped", run.skipped)):
            found = case.find(tag)
            if found is not None:
                into.append(f"{name}: {found.get('message', '')}".strip())
                break
    return run


def verdict(steps: list[Step], tests: TestRun | None, budget_s: float) -> list[str]:
    """Every reason the check failed (empty: it passed)."""
    reasons = [f"step {s.name} exited {s.code}" for s in steps if s.code != 0]
    if not steps:
        reasons.append("no step ran")
    if tests is None:
        reasons.append("no GPU test results (gpu-tests.xml missing)")
    elif tests.skipped:
        reasons.append(f"{len(tests.skipped)} gpu test(s) skipped on a GPU host")
    total = sum(s.seconds for s in steps)
    if total > budget_s:
        reasons.append(f"took {total:.0f} s, over the {budget_s:.0f} s budget")
    return reasons


def machine_section(doctor: dict[str, Any] | None) -> list[str]:
    if doctor is None:
        return ["## Machine", "", "tthf-doctor wrote no report (doctor.json missing).", ""]
    lines = ["## Machine (tthf-doctor)", ""]
    lines += [f"- {c['topic']}: {c['found']}" for c in doctor["checks"]]
    lines += [f"- MISMATCH {c['topic']}: {c['problem']}; fix: {c['fix']}" for c in doctor["checks"] if c["problem"]]
    lines += [f"- verdict: {doctor['verdict']}", ""]
    return lines


def steps_section(steps: list[Step], budget_s: float) -> list[str]:
    lines = ["## Steps", "", "| step | result | seconds | command |", "| --- | --- | ---: | --- |"]
    lines += [
        f"| {s.name} | {'ok' if s.code == 0 else f'**exit {s.code}**'} | {s.seconds:.1f} | `{s.command}` |"
        for s in steps
    ]
    lines += ["", f"Total {sum(s.seconds for s in steps):.1f} s (budget {budget_s:.0f} s).", ""]
    return lines


def tests_section(tests: TestRun | None) -> list[str]:
    lines = ["## GPU tests (`pytest -m gpu tests`)", ""]
    if tests is None:
        return [*lines, "No results (gpu-tests.xml missing).", ""]
    lines.append(
        f"{tests.total} collected: {tests.passed} passed, {len(tests.failed)} failed, {len(tests.skipped)} skipped."
    )
    lines += [f"- FAILED {t}" for t in tests.failed] + [f"- SKIPPED {t}" for t in tests.skipped]
    return [*lines, ""]


def compare_section(result: dict[str, Any] | None) -> list[str]:
    lines = ["## Dense day: `tthf-run --backend tensorrt` vs the CPU reference (`--backend torch`, GPU hidden)", ""]
    if result is None:
        return [*lines, "No comparison (compare.json missing).", ""]
    lines.append(
        f"{result['rows']:,} rows, {result['precision']} tolerances: **{'pass' if result['passed'] else 'FAIL'}**."
    )
    lines += [f"- MISMATCH {p}" for p in result["problems"]]
    lines += [
        "",
        "| output | max abs | max rel | atol | rtol | beyond | ok |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [
        f"| {o['output']} | {o['max_abs']:.2e} | {o['max_rel']:.2e} | {o['atol']:.0e} | {o['rtol']:.0e} | "
        f"{o['violations']} | {'yes' if o['passed'] else 'NO'} |"
        for o in result["outputs"]
    ]
    return [*lines, ""]


def overlap_section(records: list[dict[str, Any]] | None) -> list[str]:
    lines = ["## Ring overlap (CUDA events, `CudaRunner(timing=True)`, bench/gpu_overlap.py)", ""]
    if records is None:
        return [*lines, "No measurement (overlap.json missing).", ""]
    lines += [
        "Per stage: the GPU time its work took (ms). serial: their sum; busy: the time any of them ran; "
        "overlap = 1 - busy / serial; copy hidden: the share of copy time spent while compute also ran.",
        "",
        "| backend | windowing | windows | batches x size | upload | gather | compute | download | serial | busy "
        "| overlap | copy hidden | wall s |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        stage = [f"{r.get(f'{name}_ms', 0.0):.1f}" for name in ("upload", "gather", "compute", "download")]
        lines.append(
            f"| {r['backend']} | {r['windowing']} | {r['windows']:,} | {r['batches']} x {r['batch_size']} | "
            f"{' | '.join(stage)} | {r['serial_ms']:.1f} | {r['busy_ms']:.1f} | {r['overlap']:.0%} | "
            f"{r['copy_hidden']:.0%} | {r['wall_s']:.2f} |"
        )
    return [*lines, ""]


def bench_section(doc: dict[str, Any] | None) -> list[str]:
    lines = ["## GPU benchmarks (pytest-benchmark, best round)", ""]
    if doc is None:
        return [*lines, "No benchmark results (gpu-bench.json missing).", ""]
    lines += [
        "| benchmark | best s | per second | accuracy vs the fp32 reference, or backend |",
        "| --- | ---: | ---: | --- |",
    ]
    for b in doc["benchmarks"]:
        info = b.get("extra_info", {})
        rate = f"{info['units'] / b['stats']['min']:,.0f} {info.get('unit', '')}" if info.get("units") else ""
        accuracy = info.get("accuracy") or {}
        acc = (
            f"{accuracy['bar']} bar {'met' if accuracy['validated'] else '**missed**'}"
            if accuracy
            else info.get("backend", "")
        )
        lines.append(f"| {b['name']} | {b['stats']['min']:.4f} | {rate} | {acc} |")
    return [*lines, ""]


def logs_section(workdir: Path, steps: list[Step]) -> list[str]:
    lines = []
    for s in (s for s in steps if s.code != 0):
        log = workdir / f"{s.name}.log"
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:] if log.exists() else ["(no log)"]
        lines += [f"### {s.name} (exit {s.code}), last {LOG_TAIL} lines", "", "```", *tail, "```", ""]
    return ["## Logs of failed steps", "", *lines] if lines else []


def render(workdir: Path, budget_s: float = BUDGET_S) -> tuple[str, list[str]]:
    steps = read_steps(workdir / "steps.tsv")
    tests = read_tests(workdir / "gpu-tests.xml")
    reasons = verdict(steps, tests, budget_s)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# tthf GPU acceptance results",
        "",
        f"Generated by `bash bench/gpu_check.sh` (bench/gpu_report.py) on {now}. Nothing here is typed by hand.",
        "",
        f"**Verdict: {'PASS' if not reasons else 'FAIL'}**" + (f" ({'; '.join(reasons)})" if reasons else ""),
        "",
    ]
    lines += machine_section(read_json(workdir / "doctor.json"))
    lines += steps_section(steps, budget_s) + tests_section(tests)
    lines += compare_section(read_json(workdir / "compare.json"))
    lines += overlap_section(read_json(workdir / "overlap.json"))
    lines += bench_section(read_json(workdir / "gpu-bench.json"))
    lines += logs_section(workdir, steps)
    return "\n".join(lines).rstrip() + "\n", reasons


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write bench/GPU_RESULTS.md from bench/gpu_check.sh's work folder.")
    p.add_argument("workdir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help="time budget of the whole check (default 300)")
    args = p.parse_args(argv)
    text, reasons = render(args.workdir, args.budget_s)
    args.out.write_text(text)
    print(f"wrote {args.out}: {'PASS' if not reasons else 'FAIL: ' + '; '.join(reasons)}")
    return 0 if not reasons else 1


if __name__ == "__main__":
    sys.exit(main())

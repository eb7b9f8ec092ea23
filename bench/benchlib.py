"""Helpers the benchmarks share (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: the CPU precisions the end-to-end and real-time rows measure on the production model: precision -> tthf backend
CPU_PRECISIONS = {"fp32": "openvino", "bf16": "openvino-bf16", "int8": "openvino-int8"}


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_vnni() -> bool:
    """Native int8 dot products: AVX512-VNNI, AVX-VNNI or AMX-INT8."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


#: whether this CPU runs each of ``CPU_PRECISIONS`` natively
NATIVE: dict[str, Callable[[], bool]] = {"fp32": lambda: True, "bf16": cpu_has_bf16, "int8": cpu_has_vnni}


@contextlib.contextmanager
def served_anyway_all(run: Any, backends: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """``served_anyway`` for several backends at once (name -> backend); yields name -> the export's verdict."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(served_anyway(run, backend)) for name, backend in backends.items()}


@contextlib.contextmanager
def served_anyway(run: Any, backend: str) -> Iterator[str]:
    """Serve ``backend`` through tthf-run even where export rejected it (a benchmark measures speed; accuracy
    is the inference section's), restoring the export manifest after; yields the export's verdict."""
    from tthf.engine.artifacts import Manifest

    original = Manifest.read(run)
    verdict = str(original.variants.get(backend, {"status": "accepted (fp32 gate)"})["status"])
    if verdict == "rejected":
        manifest = Manifest.read(run)
        manifest.variants[backend] = {**manifest.variants[backend], "status": "accepted"}
        manifest.write(run)
    try:
        yield verdict
    finally:
        original.write(run)


#: a benchmarked job: one whole run, returning its work done (windows) and what to record of it
#: (``backend``, ``stages``: seconds per stage)
Job = Callable[[], tuple[int, dict[str, Any]]]


def dense_run(store: str, run_id: str, options: Any, precision: str | None = None) -> tuple[int, dict[str, Any]]:
    """One ``tthf-run`` (its library function) with ``options``: windows, backend and seconds per stage
    summed over the dates; ``precision``: the precision it must have run at."""
    from tthf.engine.runs import open_run
    from tthf.engine.runtime.batch import run_inference

    summary = run_inference(open_run(store, run_id), options)
    assert summary.exit_code == 0 and summary.windows > 0
    assert precision is None or summary.precision == precision
    stages: dict[str, float] = {}
    for result in summary.results:
        for k, v in result.seconds.items():
            stages[k] = stages.get(k, 0.0) + v
    return summary.windows, {"backend": summary.backend, "stages": stages}


def dense_precision_jobs(store: str, run_id: str, date: str, precisions: list[str]) -> dict[str, Job]:
    """``tthf-run --dense`` of one date at each of ``precisions`` (``CPU_PRECISIONS``' backends), each into
    its own prediction set (``--predictions fp32|bf16|int8``: a set holds one precision)."""
    from tthf.engine.runtime.options import RunOptions

    def job(precision: str) -> Job:
        backend = CPU_PRECISIONS[precision]
        options = RunOptions(dates=date, dense=True, backend=backend, overwrite=True, predictions=precision)
        return lambda: dense_run(store, run_id, options, precision)

    return {p: job(p) for p in precisions}


def interleaved_round(jobs: Mapping[str, Job]) -> dict[str, Any]:
    """One round: every job once, back to back, so that load from other work on a shared machine falls on
    one round of all of them instead of on every run of one (a ratio of runs made one job after another
    can be off by 2x). Returns the round as JSON: ``load_average`` (1-minute, at its start and its end) and
    ``runs``: job -> ``windows``, wall ``seconds`` and the job's own record."""
    start = os.getloadavg()[0]
    runs = {}
    for name, job in jobs.items():
        t0 = time.perf_counter()
        windows, info = job()
        runs[name] = {"windows": windows, "seconds": time.perf_counter() - t0, **info}
    return {"load_average": [start, os.getloadavg()[0]], "runs": runs}


def round_rates(rounds: list[dict[str, Any]], name: str) -> list[float]:
    """``name``'s windows/s in each round (``interleaved_round``'s records)."""
    return [r["runs"][name]["windows"] / r["runs"][name]["seconds"] for r in rounds]


def round_ratios(rounds: list[dict[str, Any]], name: str, base: str) -> list[float]:
    """``name``'s windows/s over ``base``'s in each round: the spread says how much load moved within rounds."""
    return [a / b for a, b in zip(round_rates(rounds, name), round_rates(rounds, base), strict=True)]


def best_round(rounds: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """``name``'s run of its fastest round (the least disturbed by other load)."""
    rates = round_rates(rounds, name)
    return rounds[rates.index(max(rates))]["runs"][name]


def rounds_summary(rounds: list[dict[str, Any]], base: str) -> dict[str, dict[str, float]]:
    """Per job: its ``best`` and ``median`` windows/s over the rounds, ``vs_base`` (its best over ``base``'s
    best) and ``ratio_min`` / ``ratio_max`` (its ratio to ``base`` within a round, lowest and highest)."""
    out = {}
    for name in rounds[0]["runs"]:
        rates, ratios = round_rates(rounds, name), round_ratios(rounds, name, base)
        out[name] = {
            "best": max(rates),
            "median": statistics.median(rates),
            "vs_base": max(rates) / max(round_rates(rounds, base)),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return out


#: multiply-add results per cycle per core of each precision's widest native instruction, times 2
#: flops (ops) per multiply-add, assuming two vector units per core (one AMX tile unit): the
#: vendor's peak arithmetic, by flag, first match wins
PEAK_PER_CYCLE = {
    "fp32": (("avx512f", 2 * 16 * 2), ("avx2", 2 * 8 * 2)),
    "bf16": (("amx_bf16", 1024), ("avx512_bf16", 2 * 32 * 2)),
    "int8": (("amx_int8", 2048), ("avx512_vnni", 2 * 64 * 2), ("avx_vnni", 2 * 32 * 2)),
}


def cpu_mhz() -> float | None:
    """The clock /proc/cpuinfo reports (the first core's ``cpu MHz``; a VM reports its nominal clock)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":", 1)[1])
    return None


def cpu_peaks(cores: int, flags: set[str] | None = None, mhz: float | None = None) -> dict[str, dict[str, Any]]:
    """Each precision's peak on this machine: cores x flops per cycle per core x clock, with the
    instruction it counts; a precision without a native instruction has no peak (its reason instead)."""
    flags = cpu_flags() if flags is None else flags
    mhz = cpu_mhz() if mhz is None else mhz
    out: dict[str, dict[str, Any]] = {}
    for precision, choices in PEAK_PER_CYCLE.items():
        found = next(((flag, per) for flag, per in choices if flag in flags), None)
        if found is None or not mhz:
            out[precision] = {
                "flops": None,
                "why": f"no native {precision} instruction ({', '.join(f for f, _ in choices)})",
            }
            continue
        flag, per = found
        out[precision] = {
            "flops": cores * per * mhz * 1e6,
            "formula": f"{cores} cores x {per} flop/cycle ({flag}) x {mhz / 1000:.2f} GHz",
        }
    return out


def day_windows(market: Any, bench_run: Any, day_index: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Scaled (S, M, F) features and mask of one market day, as tthf-run prepares them."""
    from tthf.engine.data.marketdata import read_day
    from tthf.engine.features import build_scaled_day

    day, run = market.dates[day_index], bench_run.run
    feats = build_scaled_day(read_day(str(market.root), day), day, run.load_scalers(), run.config.feature_names)
    return feats.scaled, feats.mask

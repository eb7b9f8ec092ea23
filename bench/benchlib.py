"""Helpers the benchmarks share (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
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

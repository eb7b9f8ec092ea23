"""Helpers the benchmarks share (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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


def day_windows(market: Any, bench_run: Any, day_index: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Scaled (S, M, F) features and mask of one market day, as tthf-run prepares them."""
    from tthf.engine.data.marketdata import read_day
    from tthf.engine.features import build_scaled_day

    day, run = market.dates[day_index], bench_run.run
    feats = build_scaled_day(read_day(str(market.root), day), day, run.load_scalers(), run.config.feature_names)
    return feats.scaled, feats.mask

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
    from tthf.engine.features import build_day
    from tthf.engine.data.marketdata import read_day
    from tthf.engine.features.scalers import Scalers

    day = market.dates[day_index]
    feats = build_day(read_day(str(market.root), day), day)
    scalers = Scalers.from_json(bench_run.run.read_text("scalers.json"))
    return scalers.transform(feats, bench_run.run.config.feature_names), feats.mask

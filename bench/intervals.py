"""How much of the CUDA ring's GPU work ran concurrently, from the intervals ``CudaRunner.stage_times()`` gives.

bench/gpu_overlap.py reports it in bench/GPU_RESULTS.md; the runtime itself never needs it.
"""

from __future__ import annotations

from tthf.engine.runtime.runner import Intervals

#: the ring's stages as ``stage_times`` names them; copies run on the copy stream, the rest on the compute stream
STAGES = ("upload", "gather", "compute", "download")
COPY_STAGES = ("upload", "download")


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _length(spans: list[tuple[float, float]]) -> float:
    return sum(hi - lo for lo, hi in _union(spans))


def _intersection(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of time covered by both ``a`` and ``b``."""
    total, ua, ub = 0.0, _union(a), _union(b)
    for lo, hi in ua:
        for blo, bhi in ub:
            total += max(0.0, min(hi, bhi) - max(lo, blo))
    return total


def overlap(intervals: Intervals) -> dict[str, float]:
    """How much of the ring's GPU work ran concurrently, from ``stage_times()``.

    - ``<stage>_ms``: time each stage kept its engine busy; ``serial_ms`` their sum, the time
      the same work takes one stage after another;
    - ``busy_ms``: the time at least one stage was running (the union);
    - ``overlap``: ``1 - busy_ms / serial_ms``: 0 when nothing overlapped;
    - ``copy_hidden``: the share of copy time (upload and download) spent while the compute
      stream was also busy: 1 means every copy was hidden behind a batch's compute.
    """
    busy = {stage: _length(spans) for stage, spans in intervals.items()}
    every = [span for spans in intervals.values() for span in spans]
    copies = [span for stage in COPY_STAGES for span in intervals.get(stage, [])]
    compute = [span for stage in STAGES if stage not in COPY_STAGES for span in intervals.get(stage, [])]
    serial, union, copy = sum(busy.values()), _length(every), _length(copies)
    return {
        **{f"{stage}_ms": ms for stage, ms in busy.items()},
        "serial_ms": serial,
        "busy_ms": union,
        "overlap": 1 - union / serial if serial else 0.0,
        "copy_hidden": _intersection(copies, compute) / copy if copy else 0.0,
    }

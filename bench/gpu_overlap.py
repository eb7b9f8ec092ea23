"""How much the CUDA ring overlaps its uploads, engine runs and downloads, measured with CUDA events.

    python bench/gpu_overlap.py --store STORE --run RUN --data DATA_ROOT --date YYYY-MM-DD \
        [--backend tensorrt] [--batch-size 4096] > overlap.json

Runs one dense day through ``CudaRunner(timing=True)`` once per windowing mode (``host``:
an upload per batch; ``device``: the grid once, then a gather per batch), after one warm-up
run each, and prints a JSON list with one record per mode: the busy time of every stage, their serial
sum, the time the GPU was busy with any of them, ``overlap`` (1 - busy / serial) and
``copy_hidden`` (the share of copy time spent while the compute stream was busy), all from
``bench/intervals.py``'s ``overlap``. bench/gpu_check.sh runs it; bench/gpu_report.py
puts the numbers in bench/GPU_RESULTS.md. Needs a CUDA GPU and the backend's export.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from intervals import overlap  # bench/, beside this script

from tthf.engine import runs
from tthf.engine.features import ScaledDayFeatures
from tthf.engine.runtime.backends import open_backend
from tthf.engine.runtime.day import DayHost
from tthf.engine.runtime.runner import CudaRunner
from tthf.engine.store import open_store

MODES = ("host", "device")


def measure(run: runs.Run, feats: ScaledDayFeatures, backend_name: str, batch_size: int) -> list[dict[str, Any]]:
    """One record per windowing mode: what ran, how long, and how much of it overlapped."""
    backend = open_backend(run, backend_name)
    engine = backend.device_engine()
    if engine is None:
        raise SystemExit(f"gpu_overlap: {backend_name} does not run on a GPU here ({backend.detail})")
    records = []
    for mode in MODES:
        runner = CudaRunner(
            engine,
            capacity=batch_size,
            seq_len=run.config.model.seq_len,
            n_features=feats.scaled.shape[2],
            windowing=mode,
            timing=True,
        )
        runner.run(feats.scaled, feats.mask, stride=1)  # warm-up: TensorRT's first enqueue, allocator, caches
        t0 = time.perf_counter()
        out = runner.run(feats.scaled, feats.mask, stride=1)
        wall = time.perf_counter() - t0
        times = runner.stage_times()
        records.append(
            {
                "backend": backend_name,
                "windowing": mode,
                "windows": len(out.sym),
                "batches": len(times.get("compute", [])),
                "batch_size": runner.capacity,
                "slots": len(runner.slots),
                "wall_s": wall,
                **overlap(times),
            }
        )
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Measure the CUDA ring's H2D / compute / D2H overlap with CUDA events.")
    p.add_argument("--store", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True, help="data root holding --date")
    p.add_argument("--date", required=True, type=dt.date.fromisoformat)
    p.add_argument("--backend", default="tensorrt")
    p.add_argument("--batch-size", type=int, default=4096)
    args = p.parse_args(argv)
    run = runs.Run.open(runs.find_run(args.store, args.run))
    host = DayHost(run, open_store(args.data))
    feats = host.features(host.read(args.date)).features
    assert feats is not None
    records = measure(run, feats, args.backend, args.batch_size)
    print(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

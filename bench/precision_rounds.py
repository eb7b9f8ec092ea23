"""`tthf-run --dense` with the production-size model at fp32, bf16 and int8, in interleaved rounds.

    python bench/precision_rounds.py [--symbols 200] [--rounds 3]

bench_end_to_end.py measures each precision once, one after another; on a shared machine the
load moves between them, and a ratio of two sequential rows can be off by 2x. Here every
round runs the three precisions back to back on the same date (each into its own prediction
set), so a load spike hits one round of all three; it prints each round's windows/s and load,
then each precision's best and median and the best against fp32's best. docs/export.md
("INT8") quotes its output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from typing import Any

from benchlib import CPU_PRECISIONS
from conftest import PRODUCTION_MODEL

from tthf.engine.data.marketdata import write_day
from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.runs import open_run
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions
from tthf.engine.testing import make_random_run
from tthf.export.api import export_run
from tthf.export.config import ExportConfig


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        cfg = SynthConfig(n_symbols=args.symbols, start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 29), seed=11)
        days = cfg.days[:2]
        for day in days:
            write_day(f"{root}/data", day, generate_day(cfg, day))
        model: dict[str, Any] = dict(PRODUCTION_MODEL)
        run = make_random_run(f"{root}/store", f"{root}/data", days, "rounds", **model)
        result = export_run(run, ExportConfig(real_windows=512, int8=True, quality_windows=0), data=f"{root}/data")
        print(result.variants_line())
        rates: dict[str, list[float]] = {p: [] for p in CPU_PRECISIONS}
        for round_ in range(args.rounds):
            for precision, backend in CPU_PRECISIONS.items():
                options = RunOptions(
                    dates=days[-1].isoformat(), dense=True, backend=backend, overwrite=True, predictions=precision
                )
                t0 = time.perf_counter()
                summary = run_inference(open_run(f"{root}/store", "rounds"), options)
                wall = time.perf_counter() - t0
                rates[precision].append(summary.windows / wall)
                print(
                    f"round {round_} {precision}: {summary.windows} windows in {wall:.1f}s, "
                    f"{summary.windows / wall:,.0f} w/s, load {os.getloadavg()[0]:.1f}"
                )
    best_fp32 = max(rates["fp32"])
    for precision, values in rates.items():
        median = sorted(values)[len(values) // 2]
        print(
            f"{precision}: best {max(values):,.0f} w/s, median {median:,.0f}, best vs fp32's best "
            f"{max(values) / best_fp32:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

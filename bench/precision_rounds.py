"""`tthf-run --dense` with the production-size model at fp32, bf16 and int8, in interleaved rounds.

    python bench/precision_rounds.py [--symbols 200] [--rounds 3]

The same rounds as bench_end_to_end.py's ``test_end_to_end_precision`` (``benchlib.interleaved_round``:
every round runs the three precisions back to back on the same date, each into its own
prediction set, so a load spike hits one round of all three), on a market and run of its own,
from the command line: it prints each round's windows/s and load, then each precision's best
and median, its best against fp32's best and its ratio to fp32 per round (lowest..highest).
docs/export.md ("INT8") quotes its output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from typing import Any

from benchlib import CPU_PRECISIONS, dense_precision_jobs, interleaved_round, rounds_summary, served_anyway_all
from conftest import PRODUCTION_MODEL

from tthf.engine.data.marketdata import write_day
from tthf.engine.data.synth import SynthConfig, generate_day
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
        jobs = dense_precision_jobs(f"{root}/store", "rounds", days[-1].isoformat(), list(CPU_PRECISIONS))
        rounds = []
        with served_anyway_all(run, CPU_PRECISIONS):
            for i in range(args.rounds):
                rounds.append(interleaved_round(jobs))
                runs, load = rounds[-1]["runs"], rounds[-1]["load_average"]
                print(
                    f"round {i} (load {load[0]:.1f}-{load[1]:.1f}): "
                    + ", ".join(f"{p} {r['windows'] / r['seconds']:,.0f} w/s" for p, r in runs.items())
                    + f" ({runs['fp32']['windows']} windows each)"
                )
    for precision, s in rounds_summary(rounds, "fp32").items():
        print(
            f"{precision}: best {s['best']:,.0f} w/s, median {s['median']:,.0f}, best vs fp32's best "
            f"{s['vs_base']:.2f}x, per round {s['ratio_min']:.2f}..{s['ratio_max']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

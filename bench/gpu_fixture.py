"""The run that bench/gpu_check.sh exports and predicts: the production model size with random weights.

    python bench/gpu_fixture.py --store STORE --data DATA_ROOT [--run gpucheck]

Uses the first three dates under ``DATA_ROOT`` (scalers on the first, one date per split,
as ``tthf.engine.testing.make_random_run`` does) and prints the last of them: the dense day
to predict. Random weights, as in the benchmarks: speed and the fp16-vs-fp32 agreement are
properties of the compiled graph, and training would add minutes to a 5-minute check.
"""

from __future__ import annotations

import argparse
import sys

from tthf.engine.data.marketdata import list_dates
from tthf.engine.testing import make_random_run

DATES = 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Create the random-weight run that bench/gpu_check.sh uses.")
    p.add_argument("--store", required=True, help="run store to create the run in")
    p.add_argument("--data", required=True, help="data root with at least three dates (tthf-synth)")
    p.add_argument("--run", default="gpucheck", help="run id (default: %(default)s)")
    args = p.parse_args(argv)
    dates = list_dates(args.data)[:DATES]
    if len(dates) < DATES:
        print(
            f"gpu_fixture: {args.data} has {len(dates)} dates, {DATES} are needed; run tthf-synth over more days",
            file=sys.stderr,
        )
        return 2
    make_random_run(args.store, args.data, dates, args.run)
    print(dates[-1].isoformat())
    return 0


if __name__ == "__main__":
    sys.exit(main())

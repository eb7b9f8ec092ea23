"""Real time from feature rows: the host side's cost per minute along the day (is it flat, or does it grow?).

    python bench/realtime_files.py --symbols 100 1000 [--minutes 390]

A run that reads all 59 of its inputs from feature files, fed minute by minute with
``RealtimePredictor.update(<that minute's feature rows>, close=minute)`` for a whole
session (390 minutes). The backend is a stub that returns zeros, so the time measured is the
predictor's own: taking the rows, the day's grid, the fill and scaling, the windows. The
table gives the median milliseconds per minute in the first, middle and last hour of the
day: flat when each minute costs the same, growing when a minute rebuilds the day so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from tthf.engine import runs
from tthf.engine.config import OUTPUT_NAMES, FeatureFiles
from tthf.engine.data.calendar import session_minutes
from tthf.engine.runtime.realtime import RealtimePredictor
from tthf.engine.testing import DAYS, make_data, make_random_run

DAY = DAYS[1]
#: the minutes of the day whose per-minute cost the table gives (session minute indices)
SPANS = {"first hour": range(30, 90), "midday": range(165, 225), "last hour": range(330, 390)}


class StubBackend:
    """Zeros for every window, at no cost: what is left to measure is the predictor's host side."""

    name = "stub"

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.zeros(len(x), np.float32) for name in OUTPUT_NAMES}

    def fixed_batch(self, n: int) -> None:
        return None


def feature_rows(names: list[str], n_symbols: int) -> pl.DataFrame:
    """Every session minute of ``DAY`` for ``n_symbols`` symbols, random values, 2% nulls."""
    minutes = session_minutes(DAY)
    rng = np.random.default_rng(3)
    n = n_symbols * len(minutes)
    values = rng.standard_normal((n, len(names)))
    values[rng.random(values.shape) < 0.02] = np.nan
    return pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:04d}" for i in range(n_symbols)], len(minutes)),
            "ts": pl.Series(np.tile(minutes, n_symbols)).dt.replace_time_zone("UTC"),
            **{name: values[:, i] for i, name in enumerate(names)},
        }
    ).with_columns(pl.col(names).fill_nan(None))


def measure(run: runs.Run, n_symbols: int, n_minutes: int) -> list[float]:
    """Milliseconds of each minute's ``update`` over the day's first ``n_minutes``."""
    rt = RealtimePredictor(run, StubBackend())  # type: ignore[arg-type]
    rows = feature_rows(list(run.config.feature_names), n_symbols)
    parts = rows.partition_by("ts", as_dict=True, maintain_order=True)
    out = []
    for minute in session_minutes(DAY)[:n_minutes]:
        close = minute.astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc)
        part = parts[(close,)]
        t0 = time.perf_counter()
        rt.update(part, close=close)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--minutes", type=int, default=390, help="feed the day's first minutes only (a slow baseline)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = make_data(base / "market", n_symbols=3)
        run = make_random_run(str(base / "store"), data, DAYS, "files", seed=1)
        files = FeatureFiles(root=str(base / "features"), columns=list(run.config.feature_names))
        run = runs.Run.new(run.ref, dataclasses.replace(run.config, feature_files=files))
        print(f"\nms per minute (median) of RealtimePredictor.update from feature rows, {len(files.columns)} columns")
        print(f"{'symbols':>8} " + " ".join(f"{k:>11}" for k in SPANS) + f" {'last/first':>11} {'day s':>7}")
        for n in args.symbols:
            ms = measure(run, n, args.minutes)
            med = [statistics.median(ms[i] for i in span if i < len(ms)) if span[0] < len(ms) else None
                   for span in SPANS.values()]  # fmt: skip
            cells = " ".join(f"{m:>11.2f}" if m is not None else f"{'-':>11}" for m in med)
            ratio = f"{med[-1] / med[0]:>11.1f}" if med[-1] is not None and med[0] else f"{'-':>11}"
            print(f"{n:>8} {cells} {ratio} {sum(ms) / 1e3:>7.1f}", flush=True)


if __name__ == "__main__":
    main()

"""Windows/s of one dense date from feature files against the same date from raw bars (docs/import.md).

    python bench/feature_files.py --symbols 50 --repeats 3

Two runs with the same random weights and scalers over one synthetic market: one computes its
59 features from the raw bars (tthf's own path), the other reads the same 59 values from
one flat Parquet file per date (``[features.columns]``, ``ffill_then_zero``). Each is exported
(ONNX Runtime, fp32) and predicted dense by ``tthf-run`` on the last date, ``--repeats``
times; the table gives the end-to-end windows/s and the host side (read + features) alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from tthf.cli import run as run_cli
from tthf.engine import runs
from tthf.engine.config import FeatureFiles
from tthf.engine.data.marketdata import read_day, write_day
from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.features import build_day
from tthf.engine.runtime.day import DayHost
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS, make_random_run
from tthf.export.api import export_run
from tthf.export.config import ExportConfig


def write_features(data: Path, root: Path) -> None:
    """The raw market's features as the user's flat daily files: symbol, ts and the 59 columns."""
    root.mkdir(parents=True, exist_ok=True)
    for day in DAYS:
        feats = build_day(read_day(str(data), day), day)
        s, m, _ = feats.features.shape
        frame = pl.DataFrame(
            {
                "symbol": np.repeat(feats.symbols, m),
                "ts": pl.Series(np.tile(feats.minutes, s)).dt.replace_time_zone("UTC"),
                **{n: feats.features[..., i].reshape(-1) for i, n in enumerate(feats.feature_names)},
            }
        )
        frame.write_parquet(root / f"{day}.parquet")


def measure(store: str, run_id: str, repeats: int) -> tuple[list[float], list[float], int]:
    """(end-to-end windows/s of tthf-run --dense, host-side windows/s, windows) over ``repeats`` runs."""
    run = runs.open_run(store, run_id)
    day = DAYS[-1]
    args = ["--run", run_id, "--store", store, "--dates", str(day), "--dense", "--backend", "onnxruntime"]
    total, host = [], []
    windows = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert run_cli.main([*args, "--overwrite"]) == 0
        seconds = time.perf_counter() - t0
        windows = pl.read_csv(run.store.uri(f"inference/{day}.csv")).height
        total.append(windows / seconds)
        worker = DayHost(run, open_store(run.config.data_root))
        t0 = time.perf_counter()
        worker.build(day)
        host.append(windows / (time.perf_counter() - t0))
    return total, host, windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = base / "market"
        cfg = SynthConfig(n_symbols=args.symbols, start=DAYS[0], end=DAYS[-1], seed=3)
        for day in DAYS:
            write_day(str(data), day, generate_day(cfg, day))
        write_features(data, base / "features")
        store = str(base / "store")
        for run_id in ("raw", "files"):
            run = make_random_run(store, data, DAYS, run_id, seed=1)
            if run_id == "files":
                files = FeatureFiles(root=str(base / "features"), columns=list(run.config.feature_names))
                run = runs.Run.new(run.ref, dataclasses.replace(run.config, feature_files=files))
            export_run(run, ExportConfig(real_windows=0, random_batches=(1,)))
        print(f"\n{args.symbols} symbols, one dense date, {args.repeats} repeats (median, range)")
        print(f"{'source':<14} {'windows':>8} {'end-to-end windows/s':>28} {'host (read+features) windows/s':>36}")
        for run_id, label in (("raw", "raw bars"), ("files", "feature files")):
            total, host, windows = measure(store, run_id, args.repeats)
            print(
                f"{label:<14} {windows:>8,} {statistics.median(total):>12,.0f} ({min(total):,.0f}-{max(total):,.0f})"
                f" {statistics.median(host):>16,.0f} ({min(host):,.0f}-{max(host):,.0f})"
            )


if __name__ == "__main__":
    main()

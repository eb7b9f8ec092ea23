"""Choose the OpenVINO backend's settings by measurement, side by side with ONNX Runtime and torch.

    python bench/tune_openvino.py [--symbols 200] [--rounds 7] [--seconds 0.3]

Builds a run of the default model size with random weights (as bench/conftest.py does),
exports it, then times every candidate on the same N(0, 1) windows (speed does not depend
on the values) at batch 1, 64, 1000 and 4096, in interleaved rounds so that load from
other jobs on a shared machine falls on every candidate alike. Prints windows/s medians
per batch size, the fastest candidate per batch size and each candidate's largest error
against the torch reference. docs/export.md ("OpenVINO") records a run of it.

Candidates: ``ort`` (tthf's OnnxRuntimeBackend, its measured best CPU setting), ``torch``
(eager reference), and OpenVINO with ``PERFORMANCE_HINT`` LATENCY (one stream, every
core) or THROUGHPUT (one stream per core, sub-batches over them through an
AsyncInferQueue), each with several sub-batch sizes, in fp32 and, where the CPU has
native bf16, bf16.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BATCHES = (1, 64, 1000, 4096)

Predict = Callable[[np.ndarray], dict[str, np.ndarray]]


def make_exported_run(root: Path, symbols: int):
    """A default-size run with random weights over two synthetic days, exported (fp32 ONNX)."""
    from tthf.engine.data.marketdata import write_day
    from tthf.engine.data.synth import SynthConfig, generate_day
    from tthf.engine.testing import make_random_run
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig

    cfg = SynthConfig(n_symbols=symbols, start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 29), seed=11)
    days = cfg.days[:2]
    for day in days:
        write_day(str(root / "market"), day, generate_day(cfg, day))
    run = make_random_run(str(root / "store"), root / "market", days, "tune")
    export_run(run, ExportConfig(real_windows=128), data=str(root / "market"))
    return run


#: OpenVINO settings compared: (label, hint, streams, threads (None: every core), sub-batch)
SETTINGS = (
    ("latency-1x-all-cores-sub1024", "LATENCY", 1, None, 1024),
    ("latency-1x1-thread-sub128", "LATENCY", 1, 1, 128),
    ("tput-stream-per-core-sub64", "THROUGHPUT", None, None, 64),
    ("tput-stream-per-core-sub128", "THROUGHPUT", None, None, 128),
    ("tput-stream-per-core-sub256", "THROUGHPUT", None, None, 256),
)


def candidates(run) -> dict[str, Predict]:
    """Every setting to compare, opened once."""
    from tthf.engine.runtime.backends import OnnxRuntimeBackend, TorchBackend
    from tthf.engine.runtime.backends.openvino import OpenVinoBackend, OpenVinoBf16Backend
    from tthf.errors import BackendUnavailableError

    out: dict[str, Predict] = {
        "ort": OnnxRuntimeBackend.from_run(run, providers=["CPUExecutionProvider"]).predict,
        "torch": TorchBackend.from_run(run).predict,
    }
    for cls in (OpenVinoBackend, OpenVinoBf16Backend):
        for label, hint, streams, threads, sub in SETTINGS:
            try:
                backend = cls.from_run(run, hint=hint, streams=streams, threads=threads, sub_batch=sub)
            except BackendUnavailableError as exc:
                print(f"skipped {cls.spec.name}: {exc}")
                break
            out[f"{cls.spec.precision}-{label}"] = backend.predict
    return out


def measure(predict: Predict, x: np.ndarray, seconds: float) -> float:
    """Windows/s over as many calls as fit in ``seconds`` (at least one)."""
    predict(x)  # warm: first-shape compilation and allocation
    calls, t0 = 0, time.perf_counter()
    while True:
        predict(x)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls * len(x) / elapsed


def max_errors(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {np.abs(got[k] - v).max():.1e}" for k, v in reference.items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--symbols", type=int, default=200, help="symbols of the synthetic market (default 200)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per batch size (default 7)")
    p.add_argument("--seconds", type=float, default=0.3, help="seconds per candidate per round (default 0.3)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as tmp:
        run = make_exported_run(Path(tmp), args.symbols)
        cfg = run.config.model
        x_all = np.random.default_rng(0).standard_normal((max(BATCHES), cfg.seq_len, cfg.n_features), np.float32)
        preds = candidates(run)
        reference = preds["torch"](x_all)
        for name, predict in preds.items():
            print(f"{name:32s} max abs error vs torch: {max_errors(reference, predict(x_all))}")
        print("\n| candidate | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
        print("| --- |" + " --- |" * len(BATCHES))
        table: dict[str, list[float]] = {name: [] for name in preds}
        for batch in BATCHES:
            x = np.ascontiguousarray(x_all[:batch])
            rates: dict[str, list[float]] = {name: [] for name in preds}
            for _ in range(args.rounds):
                for name, predict in preds.items():
                    rates[name].append(measure(predict, x, args.seconds))
            for name in preds:
                table[name].append(statistics.median(rates[name]))
        for name, row in table.items():
            print(f"| {name} | " + " | ".join(f"{r:,.0f}" for r in row) + " |")
        for i, batch in enumerate(BATCHES):
            best = max(table, key=lambda n: table[n][i])
            print(
                f"batch {batch}: fastest {best} ({table[best][i]:,.0f} windows/s, "
                f"{table[best][i] / table['ort'][i]:.2f}x ort, {table[best][i] / table['torch'][i]:.2f}x torch)"
            )


if __name__ == "__main__":
    main()

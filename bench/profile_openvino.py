"""Where the production model's time goes at each CPU precision: OpenVINO's per-layer performance counters.

    python bench/profile_openvino.py [--symbols 40] [--batch 128] [--iterations 20]

Builds a production-size run with random weights (``conftest.PRODUCTION_MODEL``) on a small
synthetic market, exports it with ``--int8`` (NNCF, calibrated on the training date), then
compiles ``model.onnx`` at f32 and bf16 and the int8 IR with ``PERF_COUNT`` on one stream of one
thread (per-layer times are clean there; the THROUGHPUT configuration runs the same kernels on
more streams) and prints, per precision, the share of the executed time of each kind of layer:
matrix products that ran in int8 or bf16 (their ``exec_type`` names the arithmetic), those that
stayed in f32, and the rest (attention's softmax, LayerNorm, GELU, reorders and conversions).
What stays in floating point bounds what int8 can win: an Amdahl bound
``1 / (rest + quantized / s)`` for a quantized-product speedup ``s``. docs/export.md, "INT8",
quotes its output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from conftest import PRODUCTION_MODEL

from tthf.engine import artifacts, runs
from tthf.engine.data.marketdata import write_day
from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.model.interface import INPUT_NAME, ModelIO
from tthf.engine.testing import make_random_run
from tthf.export.api import export_run
from tthf.export.config import ExportConfig


def _category(node_type: str, exec_type: str) -> str:
    """A layer's kind: products by the arithmetic they ran in, the rest by what they are."""
    low = exec_type.lower()
    if "FullyConnected" in node_type or node_type in ("MatMul", "Convolution"):
        if "i8" in low or "u8" in low:
            return "products, int8"
        return "products, bf16" if "bf16" in low else "products, f32"
    if node_type == "Subgraph":
        return "fused subgraphs (attention, elementwise)"
    if node_type in ("Reorder", "Convert", "FakeQuantize"):
        return f"conversions ({node_type})"
    return node_type


#: (precision hint, node type, exec type) of every executed layer, for --verbose
SEEN: set[tuple[str, str, str]] = set()


def profile(model: bytes, weights: bytes, hint: str, x: np.ndarray, iterations: int) -> tuple[dict[str, float], float]:
    """Per-category microseconds per window and the wall time per window, one stream, one thread."""
    import openvino as ov

    core = ov.Core()
    config = {
        "PERF_COUNT": True,
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": 1,
        "INFERENCE_PRECISION_HINT": hint,
    }
    compiled = core.compile_model(core.read_model(model, weights), "CPU", config)
    request = compiled.create_infer_request()
    request.infer({INPUT_NAME: x})  # warm up
    totals: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    for _ in range(iterations):
        request.infer({INPUT_NAME: x})
        for info in request.profiling_info:
            if info.status.name == "EXECUTED":
                totals[_category(info.node_type, info.exec_type)] += info.real_time.total_seconds() * 1e6
                SEEN.add((hint, info.node_type, info.exec_type))
    wall = (time.perf_counter() - t0) / iterations / len(x) * 1e6
    return {k: v / iterations / len(x) for k, v in totals.items()}, wall


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=40)
    p.add_argument("--batch", type=int, default=128, help="windows per call (OpenVINO backend's SUB_BATCH)")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--verbose", action="store_true", help="also list every (node type, exec type) executed")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = SynthConfig(n_symbols=args.symbols, start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 6), seed=11)
        for day in cfg.days:
            write_day(str(root / "data"), day, generate_day(cfg, day))
        model: dict[str, Any] = dict(PRODUCTION_MODEL)
        run = make_random_run(str(root / "store"), root / "data", cfg.days, "profile", **model)
        export_run(run, ExportConfig(real_windows=256, int8=True, quality_windows=0), data=str(root / "data"))
        manifest = artifacts.open_fresh(run)
        files = {n: artifacts.read_artifact(run, manifest, n) for n in (runs.FP32_ONNX, runs.INT8_XML, runs.INT8_BIN)}
        x = ModelIO.of(run.config.model).dummy_inputs([args.batch], seed=0)[0].x
        cases = {
            "fp32": (files[runs.FP32_ONNX], b"", "f32"),
            "bf16": (files[runs.FP32_ONNX], b"", "bf16"),
            "int8": (files[runs.INT8_XML], files[runs.INT8_BIN], "f32"),
        }
        print(f"production model {PRODUCTION_MODEL}, batch {args.batch}, one stream of one thread, us per window")
        print(f"int8 variant at export: {manifest.variants.get('openvino-int8', {}).get('status')}")
        results = {name: profile(*case, x, args.iterations) for name, case in cases.items()}
    kinds = sorted({k for per, _ in results.values() for k in per}, key=lambda k: -results["fp32"][0].get(k, 0.0))
    print("| layer kind | " + " | ".join(f"{n} us/window (share)" for n in results) + " |")
    print("| --- |" + " ---: |" * len(results))
    for kind in kinds:
        cells = []
        for per, _ in results.values():
            total = sum(per.values())
            v = per.get(kind, 0.0)
            cells.append(f"{v:.2f} ({100 * v / total:.0f}%)" if v else "-")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print("| sum of layers | " + " | ".join(f"{sum(per.values()):.2f}" for per, _ in results.values()) + " |")
    print("| wall per window | " + " | ".join(f"{wall:.2f}" for _, wall in results.values()) + " |")
    if args.verbose:
        for seen in sorted(SEEN):
            print(*seen)
    fp32_wall = results["fp32"][1]
    for name, (per, wall) in results.items():
        if name == "fp32":
            continue
        total = sum(per.values())
        fast = sum(v for k, v in per.items() if k == f"products, {name}")
        print(
            f"{name}: {fp32_wall / wall:.2f}x fp32 on one thread; {100 * fast / total:.0f}% of its time in {name} "
            f"products, {100 * (total - fast) / total:.0f}% in what stays in floating point"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

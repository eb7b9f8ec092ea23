"""Exporter choice and backend speed on CPU: the numbers behind docs/export.md.

For the default-size model (random weights, seed 0; speed does not depend on the
values): ONNX Runtime CPU time of the dynamo and the TorchScript-based export, PyTorch
CPU time, and the fp32 / fp16 ONNX errors against PyTorch. Batch 1000, 2 threads,
interleaved repetitions, median and min reported.

    python bench/bench_export.py [--reps 30] [--batch 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import onnxruntime as ort
import torch

from tthf.engine.config import OUTPUT_NAMES, ModelConfig
from tthf.engine.features import FEATURE_NAMES
from tthf.engine.model.network import ThreeHeadedTransformer
from tthf.export.fp16 import convert_to_fp16
from tthf.export.onnx_export import export_onnx
from tthf.export.validate import compare, format_table, tolerances


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(n_features=len(FEATURE_NAMES))
    model = ThreeHeadedTransformer(cfg).eval()
    protos, export_s = {}, {}
    for exporter, opset in (("dynamo", 18), ("torchscript", 17)):
        t0 = time.perf_counter()
        protos[exporter] = export_onnx(
            model, seq_len=cfg.seq_len, n_features=cfg.n_features, exporter=exporter, opset=opset
        )
        export_s[exporter] = time.perf_counter() - t0
    protos["dynamo-fp16"] = convert_to_fp16(protos["dynamo"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    sessions = {
        k: ort.InferenceSession(p.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for k, p in protos.items()
    }
    x = np.random.default_rng(0).standard_normal((args.batch, cfg.seq_len, cfg.n_features), dtype=np.float32)
    xt = torch.from_numpy(x)

    def run_torch() -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.numpy() for t in model(xt)]

    runners: dict[str, Callable[[], object]] = {
        f"onnxruntime {k}": partial(s.run, None, {"features": x}) for k, s in sessions.items()
    }
    runners["pytorch"] = run_torch
    for fn in runners.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for rep in range(args.reps):
        for name in list(runners) if rep % 2 else list(reversed(runners)):
            t0 = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)
    print(f"batch {args.batch}, {args.threads} threads, {args.reps} interleaved reps")
    for k, secs in export_s.items():
        print(f"export time {k:<12} {secs:6.1f} s, {len(protos[k].graph.node)} nodes")
    for name, v in times.items():
        print(f"{name:<26} median {1e3 * np.median(v):7.1f} ms   min {1e3 * min(v):7.1f} ms")
    ref = dict(zip(OUTPUT_NAMES, run_torch()))
    results = []
    for key, precision in (("dynamo", "fp32"), ("torchscript", "fp32"), ("dynamo-fp16", "fp16")):
        got = dict(zip(OUTPUT_NAMES, sessions[key].run(None, {"features": x})))
        results += compare(
            ref,
            got,
            artifact=key,
            backend="onnxruntime-cpu",
            inputs=f"random@{args.batch}",
            precision=precision,
            tolerance=tolerances(precision, cfg),
        )
    print(format_table(results))


if __name__ == "__main__":
    main()

"""ModelOpt AutoCast against tthf's own fp16 pass (export/fp16.py) on this model: error and graph size.

NVIDIA's ModelOpt (``nvidia-modelopt[onnx]``) pulls its own onnx and onnxruntime-gpu pins,
so it runs in a throwaway venv of its own; the other two steps run where tthf is:

    python bench/fp16_autocast.py prepare DIR                 # tthf venv: models, windows
    /tmp/modelopt-venv/bin/python bench/fp16_autocast.py autocast DIR   # ModelOpt venv
    python bench/fp16_autocast.py evaluate DIR                # tthf venv: the table

``prepare`` writes, per model size (``tiny``: tthf.engine.testing.make_run; ``default``:
the production ModelConfig), the fp32 ONNX (dynamo, opset 18), export/fp16.py's fp16
model, 4096 held-out real windows, 4096 N(0, 1) windows, a 512-window calibration file and
the names of the attention MatMuls (the MatMuls with no weight input). ``autocast``
converts the fp32 ONNX twice: AutoCast's defaults, and NVIDIA's recommendation for
TensorRT 11 (I/O, LayerNormalization and the attention MatMuls kept in fp32), both with
``keep_io_types`` and the real windows as calibration data. ``evaluate`` runs every model
through ONNX Runtime on the CPU and compares it with the fp32 PyTorch reference at the
export's fp16 tolerances (docs/export.md, "fp16 conversion: ModelOpt AutoCast vs our pass").
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

N_WINDOWS = 4096
N_CALIB = 512
SIZES = ("tiny", "default")
VARIANTS = ("ours", "autocast_default", "autocast_recommended")


def prepare(out: Path) -> None:
    import onnx

    from tthf.engine.testing import DAYS, make_data, make_random_run, make_run
    from tthf.export.fp16 import convert_to_fp16
    from tthf.export.inputs import heldout_windows
    from tthf.export.onnx_export import export_onnx

    data = make_data(out / "data", n_symbols=20)
    runs = {
        "tiny": make_run(str(out / "store"), data),
        "default": make_random_run(str(out / "store"), data, DAYS, "default"),
    }
    for size, run in runs.items():
        cfg = run.config.model
        fp32 = export_onnx(
            run.load_model(), seq_len=cfg.seq_len, n_features=cfg.n_features, exporter="dynamo", opset=18
        )
        onnx.save(fp32, str(out / f"{size}_fp32.onnx"))
        onnx.save(convert_to_fp16(fp32), str(out / f"{size}_ours.onnx"))
        real = heldout_windows(run, N_WINDOWS, seed=1)
        rng = np.random.default_rng(0)
        np.save(out / f"{size}_real.npy", real)
        np.save(out / f"{size}_random.npy", rng.standard_normal(real.shape, dtype=np.float32))
        np.savez(out / f"{size}_calib.npz", features=real[:N_CALIB])
        weights = {i.name for i in fp32.graph.initializer} | {
            o for n in fp32.graph.node if n.op_type == "Constant" for o in n.output
        }
        attention = [n.name for n in fp32.graph.node if n.op_type == "MatMul" and not set(n.input) & weights]
        (out / f"{size}_meta.json").write_text(json.dumps({"run": run.ref.run_id, "attention_matmuls": attention}))


def autocast(out: Path) -> None:
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    for size in SIZES:
        attention = json.loads((out / f"{size}_meta.json").read_text())["attention_matmuls"]
        configs = {
            "default": {},
            "recommended": {
                "op_types_to_exclude": ["LayerNormalization"],
                "nodes_to_exclude": [f"^{re.escape(n)}$" for n in attention],
            },
        }
        for name, options in configs.items():
            t0 = time.perf_counter()
            model = convert_to_mixed_precision(
                str(out / f"{size}_fp32.onnx"),
                low_precision_type="fp16",
                keep_io_types=True,
                calibration_data=str(out / f"{size}_calib.npz"),
                **options,
            )
            onnx.save(model, str(out / f"{size}_autocast_{name}.onnx"))
            print(f"{size} autocast {name}: {time.perf_counter() - t0:.1f} s")


def graph_summary(path: Path) -> dict[str, int]:
    """Nodes, Casts, and nodes whose first output is fp16 (after ONNX shape inference)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    half = sum(
        1 for n in model.graph.node if n.op_type != "Cast" and types.get(n.output[0]) == onnx.TensorProto.FLOAT16
    )
    casts = sum(1 for n in model.graph.node if n.op_type == "Cast")
    return {"nodes": len(model.graph.node), "casts": casts, "fp16_nodes": half, "bytes": path.stat().st_size}


def evaluate(out: Path) -> None:
    from tthf.engine.runs import Run, find_run
    from tthf.engine.runtime.backends import OnnxRuntimeBackend, TorchBackend
    from tthf.export.validate import compare, tolerances

    for size in SIZES:
        meta = json.loads((out / f"{size}_meta.json").read_text())
        run = Run.open(find_run(str(out / "store"), meta["run"]))
        tol = tolerances("fp16", run.config.model)
        reference = TorchBackend(run.load_model(), device="cpu")
        for inputs in ("real", "random"):
            x = np.load(out / f"{size}_{inputs}.npy")
            want = reference.predict(x)
            for variant in VARIANTS:
                path = out / f"{size}_{variant}.onnx"
                if not path.exists():
                    print(f"{size} {variant}: missing ({path.name})")
                    continue
                got = OnnxRuntimeBackend(path.read_bytes(), providers=["CPUExecutionProvider"]).predict(x)
                results = compare(
                    want,
                    got,
                    artifact=variant,
                    backend="onnxruntime-cpu",
                    inputs=inputs,
                    precision="fp16",
                    tolerance=tol,
                )
                share = {
                    n: float(np.max(np.abs(got[n] - want[n]) / (tol[n].atol + tol[n].rtol * np.abs(want[n]))))
                    for n in want
                }
                cells = ", ".join(f"{r.output} {r.max_abs:.1e} ({share[r.output]:.0%})" for r in results)
                print(
                    f"{size} {inputs} {variant}: within fp16 tolerance {all(r.passed for r in results)}; "
                    f"max abs error (share of the tolerance used): {cells}"
                )
        for variant in VARIANTS:
            path = out / f"{size}_{variant}.onnx"
            if path.exists():
                print(f"{size} {variant} graph: {graph_summary(path)}")
        print(f"{size} fp32 graph: {graph_summary(out / f'{size}_fp32.onnx')}")


def main(argv: list[str]) -> int:
    steps = {"prepare": prepare, "autocast": autocast, "evaluate": evaluate}
    if len(argv) != 2 or argv[0] not in steps:
        print(__doc__)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    steps[argv[0]](out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

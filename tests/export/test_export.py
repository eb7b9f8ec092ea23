"""tthf-export end to end on a tiny real run, plus the fp16 pass and the validation rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tthf.engine import runs
from tthf.engine.artifacts import Manifest, sha256
from tthf.engine.config import OUTPUT_NAMES, ModelConfig
from tthf.engine.model.interface import Tolerance
from tthf.engine.runs import EXPORT_MANIFEST as MANIFEST
from tthf.engine.testing import make_data, make_run
from tthf.errors import ExportError, UsageError, ValidationError
from tthf.export.config import ExportConfig
from tthf.export.fp16 import convert_to_fp16, half_nodes
from tthf.export.onnx_export import export_onnx
from tthf.export.validate import compare, enforce, format_table, tolerances

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, runs.Run]:
    torch.set_num_threads(2)
    base = tmp_path_factory.mktemp("export")
    data = make_data(base / "data")
    store = str(base / "store")
    return store, make_run(store, data)


@pytest.fixture(scope="module")
def exported(tiny: tuple[str, runs.Run]) -> tuple[runs.Run, subprocess.CompletedProcess[str]]:
    """One real ``tthf-export --run jenn`` process (prefix match) on the tiny run."""
    store, run = tiny
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tthf.cli.export",
            "--run",
            "jenn",
            "--store",
            store,
            "--real-windows",
            "600",
            "--opt-batch",
            "256",
            "--opt-batch",
            "1024",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    return run, proc


@pytest.mark.slow
def test_cli_writes_models_manifest_and_table(exported: tuple[runs.Run, subprocess.CompletedProcess[str]]) -> None:
    run, proc = exported
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # The table has a row per artifact, input kind and output.
    for artifact in ("model.onnx", "model_fp16.onnx"):
        for output in OUTPUT_NAMES:
            assert any(
                line.startswith(artifact + " ") and f" {output} " in line and "heldout" in line
                for line in out.splitlines()
            ), (artifact, output, out)
    assert "TensorRT engine not built" in out and "--require-engine" in out
    assert "tthf-export --run jennifer" in out

    manifest = Manifest.read(run)
    assert manifest.sources[runs.CHECKPOINT] == sha256(run.read_bytes(runs.CHECKPOINT))
    assert manifest.sources[runs.SCALERS] == sha256(run.read_bytes(runs.SCALERS))
    for name, info in manifest.artifacts.items():
        assert info["sha256"] == sha256(run.read_bytes(f"export/{name}"))
    assert set(manifest.artifacts) == {"model.onnx", "model_fp16.onnx"}
    assert manifest.engine["built"] is False and "tensorrt" in manifest.engine["reason"]
    assert manifest.export_config["opt_batches"] == [256, 1024]
    assert manifest.versions["onnxruntime"] and manifest.versions["torch"]
    assert {v["backend"] for v in manifest.validation} >= {"onnxruntime", "openvino"}
    kinds = {v["inputs"].split("@")[0] for v in manifest.validation}
    assert kinds == {"random", "heldout"}
    assert all(v["passed"] for v in manifest.validation)
    held = [
        v
        for v in manifest.validation
        if v["inputs"].startswith("heldout")
        and v["output"] == "ret_1h"
        and v["artifact"] == "model.onnx"
        and v["backend"] == "onnxruntime"
    ]
    assert sum(v["batch"] for v in held) == 600


@pytest.mark.slow
def test_exported_onnx_contract(exported: tuple[runs.Run, subprocess.CompletedProcess[str]]) -> None:
    run, _ = exported
    model = onnx.load_from_string(run.read_bytes("export/model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert sum(n.op_type == "LayerNormalization" for n in model.graph.node) == 2 * run.config.model.n_layers + 1

    half = onnx.load_from_string(run.read_bytes("export/model_fp16.onnx"))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in onnx.shape_inference.infer_shapes(half).graph.value_info}
    types.update({i.name: i.data_type for i in half.graph.initializer})
    types.update({i.name: i.type.tensor_type.elem_type for i in [*half.graph.input, *half.graph.output]})
    assert {types[i.name] for i in [*half.graph.input, *half.graph.output]} == {TensorProto.FLOAT}
    kept = [n for n in half.graph.node if n.op_type in ("LayerNormalization", "Softmax", "ReduceMean", "Exp")]
    assert kept and all(types[n.input[0]] == TensorProto.FLOAT for n in kept)
    matmuls = [n for n in half.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert matmuls and all(types[n.output[0]] == TensorProto.FLOAT16 for n in matmuls)


def test_require_engine_fails_fast_with_the_reason(
    tiny: tuple[str, runs.Run], capsys: pytest.CaptureFixture[str]
) -> None:
    from tthf.cli.export import main
    from tthf.engine.runtime.backends.tensorrt import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present: --require-engine succeeds here (tests/export/test_gpu_engine.py)")
    store, run = tiny
    assert main(["--run", "jennifer", "--store", store, "--require-engine"]) == ExportError.exit_code
    err = capsys.readouterr().err
    assert "--require-engine" in err and "tthf-export --run jennifer" in err
    assert not run.exists(MANIFEST) or Manifest.read(run).engine.get("built") is False


def test_export_config_checks_batches() -> None:
    with pytest.raises(UsageError, match="min"):
        ExportConfig(min_batch=8, opt_batches=(4,))
    with pytest.raises(UsageError, match="opset"):
        ExportConfig(exporter="torchscript", opset=16)
    cfg = ExportConfig(opt_batches=(100, 200))
    assert ExportConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def _tiny_model() -> tuple[torch.nn.Module, ModelConfig]:
    from tthf.engine.model.network import ThreeHeadedTransformer

    torch.manual_seed(1)
    cfg = ModelConfig(n_features=5, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    return ThreeHeadedTransformer(cfg).eval(), cfg


def test_torchscript_exporter_and_fp16_pass_match_reference() -> None:
    import onnxruntime as ort

    model, cfg = _tiny_model()
    proto = export_onnx(model, seq_len=cfg.seq_len, n_features=cfg.n_features, exporter="torchscript", opset=17)
    half = convert_to_fp16(proto)
    x = np.random.default_rng(0).standard_normal((64, cfg.seq_len, cfg.n_features), dtype=np.float32)
    with torch.no_grad():
        ref = dict(zip(OUTPUT_NAMES, (t.numpy() for t in model(torch.from_numpy(x)))))
    for precision, m in (("fp32", proto), ("fp16", half)):
        got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"features": x})
        results = compare(
            ref,
            dict(zip(OUTPUT_NAMES, got)),
            artifact=precision,
            backend="ort",
            inputs="random@64",
            precision=precision,
            tolerance=tolerances(precision, cfg),
        )
        enforce(results)
        assert all(g.dtype == np.float32 for g in got)
    # fp16 really rounds: the errors are not those of fp32.
    assert max(r.max_abs for r in results if r.output == "ret_conf") > 1e-6


def test_fp16_pass_casts_outputs_made_in_half_back_to_float() -> None:
    """An output produced directly by an fp16 MatMul keeps its name and float32 type."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2) / 7, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Softmax", ["y"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b", 2]),
        ],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert half_nodes(model.graph) == {0}
    half = convert_to_fp16(model)
    assert [o.name for o in half.graph.output] == ["y", "z"]
    import onnxruntime as ort

    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    y, z = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.dtype == z.dtype == np.float32
    np.testing.assert_allclose(y, x @ numpy_helper.to_array(w), rtol=1e-3)
    # Softmax stays fp32 and reads the fp16 MatMul through a Cast to float.
    softmax = next(n for n in half.graph.node if n.op_type == "Softmax")
    cast = next(n for n in half.graph.node if n.output[0] == softmax.input[0])
    assert cast.op_type == "Cast" and helper.get_attribute_value(cast.attribute[0]) == TensorProto.FLOAT


def test_validation_names_output_and_numbers() -> None:
    ref = {n: np.linspace(0.1, 0.9, 10, dtype=np.float32) for n in OUTPUT_NAMES}
    tol = {n: Tolerance(atol=1e-4, rtol=0.0) for n in OUTPUT_NAMES}
    ok = compare(
        ref,
        {n: v.copy() for n, v in ref.items()},
        artifact="a",
        backend="b",
        inputs="random@10",
        precision="fp32",
        tolerance=tol,
    )
    enforce(ok)
    assert all(r.max_abs == 0 and r.passed for r in ok)
    bad = {n: v.copy() for n, v in ref.items()}
    bad["vol_conf"][3] += 0.01
    results = compare(
        ref, bad, artifact="model_fp16.onnx", backend="ort", inputs="heldout@10#0", precision="fp16", tolerance=tol
    )
    with pytest.raises(ValidationError, match=r"model_fp16.onnx \(ort\) on heldout@10#0: vol_conf max_abs=0.01") as exc:
        enforce(results)
    assert "1/10 beyond atol=0.0001" in str(exc.value) and "ret_1h" not in str(exc.value)
    assert "NO" in format_table(results)
    with pytest.raises(ValidationError, match="outputs"):
        compare(
            ref,
            {n: ref[n] for n in OUTPUT_NAMES[:3]},
            artifact="a",
            backend="b",
            inputs="r",
            precision="fp32",
            tolerance=tol,
        )
    with pytest.raises(ValidationError, match="shape"):
        compare(
            ref,
            {**ref, "ret_1h": ref["ret_1h"][:, None]},
            artifact="a",
            backend="b",
            inputs="r",
            precision="fp32",
            tolerance=tol,
        )
    with pytest.raises(ValidationError, match="non-finite"):
        compare(
            ref,
            {**ref, "ret_1h": np.full(10, np.inf, dtype=np.float32)},
            artifact="a",
            backend="b",
            inputs="r",
            precision="fp16",
            tolerance=tol,
        )


def test_tolerances_scale_with_the_run() -> None:
    cfg = ModelConfig(n_features=3, ret_scale=2e-3, vol_scale=5e-4)
    t = tolerances("fp16", cfg)
    assert t["ret_1h"].atol == pytest.approx(3e-3 * 2e-3)
    assert t["vol_10m"].atol == pytest.approx(3e-3 * 5e-4)
    assert t["ret_conf"].atol == 5e-3

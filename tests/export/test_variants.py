"""Reduced precisions on the CPU: the bf16 bar, and optional variants that never fail an export.

These run on every CPU. The bar is checked against bf16 rounding emulated in torch
(``bf16_matmuls``), and the export gate against stand-in optional backends: one within its
bar, one whose outputs are 5% off. On a CPU with native bf16, tests/runtime/test_openvino.py
also runs the real ``openvino-bf16`` backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tthf.cli.run import main as run_main
from tthf.engine import runs
from tthf.engine.artifacts import Manifest
from tthf.engine.config import OUTPUT_NAMES, ModelConfig
from tthf.engine.model.interface import ModelIO, Outputs, SpreadBar, matmul_depth, spread_bars
from tthf.engine.model.network import ThreeHeadedTransformer
from tthf.engine.runtime.backends import REGISTRY
from tthf.engine.runtime.backends.base import Backend, BackendSpec, Needs
from tthf.engine.testing import DAYS, ScaledStandIn, bf16_matmuls, make_data, make_run
from tthf.errors import RejectedVariantError
from tthf.export import api
from tthf.export.config import ExportConfig
from tthf.export.inputs import heldout_windows
from tthf.export.validate import bars, compare, failures

MODELS = {
    "default": ModelConfig(n_features=59),
    "production": ModelConfig(n_features=59, d_model=128, n_heads=8, n_layers=4, d_ff=512),
}


def _outputs(model: torch.nn.Module, x: np.ndarray) -> Outputs:
    with torch.no_grad():
        return {name: t.numpy() for name, t in zip(OUTPUT_NAMES, model(torch.from_numpy(x)))}


def _judge(cfg: ModelConfig, reference: Outputs, got: Outputs) -> str:
    """The failing outputs under the bf16 bar ('' when every output passes)."""
    results = compare(
        reference, got, artifact="model.onnx", backend="bf16", inputs="random@2048", precision="bf16",
        tolerance=bars("bf16", cfg),
    )  # fmt: skip
    assert {r.output for r in results} == set(OUTPUT_NAMES)
    return failures(results)


def test_the_bar_follows_unit_roundoff_and_depth() -> None:
    shallow, deep = (spread_bars("bf16", MODELS[k]) for k in ("default", "production"))
    assert matmul_depth(MODELS["default"]) == 19 and matmul_depth(MODELS["production"]) == 35
    for name in OUTPUT_NAMES:
        assert 0 < shallow[name].q_ratio < shallow[name].max_ratio
        assert deep[name].q_ratio > shallow[name].q_ratio  # a deeper model rounds more often
    # sigma = 2**-8 / sqrt(3) * sqrt(3 * 19); p99.9 at 3.29 sigma
    assert shallow["ret_1h"].q_ratio == pytest.approx(3.29 * 2**-8 / np.sqrt(3) * np.sqrt(57))
    assert shallow["ret_conf"].floor == pytest.approx(1e-2)
    assert shallow["ret_1h"].floor == pytest.approx(1e-2 * MODELS["default"].ret_scale)
    with pytest.raises(ValueError, match="SpreadBar"):
        SpreadBar(q_ratio=0.1, max_ratio=0.05, floor=1.0)


@pytest.mark.parametrize("size", sorted(MODELS))
def test_the_bf16_bar_accepts_bf16_rounding_and_fails_a_5_percent_scale(size: str) -> None:
    """Emulated bf16 products pass on random windows; the same reference scaled by 1.05 fails every output."""
    cfg = MODELS[size]
    torch.manual_seed(0)
    model = ThreeHeadedTransformer(cfg).eval()
    x = ModelIO.of(cfg).dummy_inputs([2048], seed=3)[0].x
    reference = _outputs(model, x)
    with bf16_matmuls():
        emulated = _outputs(model, x)
    assert any(not np.array_equal(emulated[n], reference[n]) for n in OUTPUT_NAMES)  # it did round
    assert _judge(cfg, reference, emulated) == ""
    scaled = _judge(cfg, reference, {n: v * np.float32(1.05) for n, v in reference.items()})
    assert all(f": {name} p99.9" in scaled for name in OUTPUT_NAMES), scaled


def test_the_bar_floors_a_saturated_spread() -> None:
    """A confidence stuck near 1 has almost no spread: the floor keeps bf16-sized errors inside the bar,
    and a 5% scale still fails it."""
    from scipy.special import erf

    cfg = MODELS["default"]
    rng = np.random.default_rng(0)
    z = 2.3 + 0.01 * rng.standard_normal(2048)  # erf(2.3) = 0.9989: saturated, spread ~6e-5
    logit_error = 1 + 2**-8 * rng.uniform(-1, 1, z.size)  # one bf16 rounding before the erf
    reference = {n: rng.standard_normal(z.size).astype(np.float32) * 1e-3 for n in OUTPUT_NAMES}
    reference["ret_conf"] = erf(z).astype(np.float32)
    got = {**reference, "ret_conf": erf(z * logit_error).astype(np.float32)}
    assert float(reference["ret_conf"].std()) < 1e-4
    assert _judge(cfg, reference, got) == ""
    unfloored = {n: SpreadBar(b.q_ratio, b.max_ratio, floor=1e-12) for n, b in spread_bars("bf16", cfg).items()}
    results = compare(
        reference, got, artifact="a", backend="b", inputs="random@2048", precision="bf16", tolerance=unfloored
    )
    assert "ret_conf" in failures(results)  # what the floor prevents
    assert "ret_conf" in _judge(cfg, reference, {**reference, "ret_conf": reference["ret_conf"] * 1.05})


class _Within(ScaledStandIn):
    scale = 1.0 + 2**-9  # one bf16 rounding of every output: inside the bar


class _Off(ScaledStandIn):
    scale = 1.05


def _variant(name: str, cls: type[Backend]) -> BackendSpec:
    needs = Needs(("onnxruntime",), runs.FP32_ONNX)
    return BackendSpec(name, cls, precision="bf16", device="cpu", needs=needs, optional=True)


WITHIN = _Within.spec = _variant("stand-in-within", _Within)
OFF = _Off.spec = _variant("openvino-bf16", _Off)  # as if OpenVINO's bf16 had been 5% off


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, runs.Run, api.ExportResult]:
    torch.set_num_threads(2)
    base = tmp_path_factory.mktemp("variants")
    run = make_run(str(base / "store"), make_data(base / "data"))
    with pytest.MonkeyPatch.context() as patch:
        for spec in (WITHIN, OFF):  # registered as a backend's file registers its spec
            patch.setitem(REGISTRY, spec.name, spec)
        result = api.export_run(run, ExportConfig(real_windows=256, random_batches=(64,)))
    return base, run, result


def test_a_rejected_variant_is_recorded_and_the_export_succeeds(
    exported: tuple[Path, runs.Run, api.ExportResult],
) -> None:
    _, run, result = exported
    manifest = Manifest.read(run)
    assert manifest.variants == result.manifest.variants
    within, off = manifest.variants["stand-in-within"], manifest.variants["openvino-bf16"]
    assert within["status"] == "accepted" and within["reason"] == ""
    assert off["status"] == "rejected" and "p99.9" in off["reason"] and off["precision"] == "bf16"
    assert {w["output"] for w in off["worst"]} == set(OUTPUT_NAMES) and not any(w["passed"] for w in off["worst"])
    assert {w["inputs"].split("@")[0] for w in manifest.validation if w["backend"] == "openvino-bf16"} == {
        "random",
        "heldout",
    }
    assert result.variants_line() == (
        "optional variants: openvino-bf16 rejected, openvino-int8 not built, stand-in-within accepted"
    )
    assert run.exists(runs.export_key(runs.FP32_ONNX)) and run.exists(runs.export_key(runs.FP16_ONNX))


def test_serving_a_rejected_variant_says_why_and_how(
    exported: tuple[Path, runs.Run, api.ExportResult], capsys: pytest.CaptureFixture[str]
) -> None:
    base, run, _ = exported
    argv = ["--run", "jen", "--store", str(base / "store"), "--dates", DAYS[-1].isoformat()]
    assert run_main([*argv, "--backend", "openvino-bf16"]) == RejectedVariantError.exit_code
    err = capsys.readouterr().err
    assert "does not serve openvino-bf16: it failed its bf16 bar at export" in err
    assert f"tthf-export --run {run.ref.run_id}" in err and len(err.strip().splitlines()) == 1
    assert not run.exists(runs.output_key(DAYS[-1], "csv"))


def test_a_variant_from_an_older_export_is_refused(exported: tuple[Path, runs.Run, api.ExportResult]) -> None:
    from tthf.engine.artifacts import check_variant

    _, run, _ = exported
    manifest = Manifest.read(run)
    manifest.variants = {}
    with pytest.raises(RejectedVariantError, match="predates variant validation"):
        check_variant(run, manifest, "openvino-bf16")
    check_variant(run, Manifest.read(run), "stand-in-within")  # accepted: no error


def test_an_unavailable_variant_is_recorded_with_its_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without openvino (or without native bf16) the variant is 'unavailable', never a failure."""
    import sys

    run = make_run(str(tmp_path / "store"), make_data(tmp_path / "data"))
    sets = ModelIO.of(run.config.model).dummy_inputs([5], seed=1)
    reference = api.reference_outputs(run, sets)
    files = api.build_artifacts(run, ExportConfig()).files
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    record, results = api.validate_variant(REGISTRY["openvino-bf16"], run, files, sets, reference)
    assert record["status"] == "unavailable" and "openvino is not installed" in str(record["reason"])
    assert results == []


def test_heldout_windows_of_the_run_pass_the_bar_under_emulation(
    exported: tuple[Path, runs.Run, api.ExportResult],
) -> None:
    _, run, _ = exported
    x = heldout_windows(run, 512, seed=2)
    model = run.load_model().eval()
    reference = _outputs(model, x)
    with bf16_matmuls():
        emulated = _outputs(model, x)
    assert _judge(run.config.model, reference, emulated) == ""

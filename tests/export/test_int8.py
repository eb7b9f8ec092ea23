"""The int8 variant: the int8 bar, ``tthf-export --int8`` (calibrated on training dates only,
hashed, validated, recorded), and serving it only when named and accepted.

The quantizer and the backend need nncf and openvino (the ``cpu`` extra): those tests skip
without them. OpenVINO runs int8 on every x86 CPU it supports (VNNI and AMX make it fast, not
possible), so they run on AVX2-only machines too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tthf.cli.run import main as run_main
from tthf.engine import runs
from tthf.engine.artifacts import Manifest, check_variant
from tthf.engine.config import OUTPUT_NAMES, ModelConfig
from tthf.engine.model.interface import INT8_CREST, matmul_depth, spread_bars
from tthf.engine.runtime.backends import REGISTRY, open_backend
from tthf.engine.testing import DAYS, make_data, make_run
from tthf.errors import RejectedVariantError
from tthf.export import api, inputs
from tthf.export.config import ExportConfig
from tthf.export.validate import compare, failures


def test_the_int8_bar_follows_its_quantization_step_and_depth() -> None:
    cfg = ModelConfig(n_features=59)
    int8, bf16 = spread_bars("int8", cfg), spread_bars("bf16", cfg)
    # sigma = 2**-8 * crest / sqrt(3) * sqrt(2 operands * depth 19)
    sigma = 2**-8 * INT8_CREST / np.sqrt(3) * np.sqrt(2 * matmul_depth(cfg))
    assert int8["ret_1h"].q_ratio == pytest.approx(3.29 * sigma)
    assert int8["ret_1h"].max_ratio == pytest.approx(4.5 * sigma)
    assert all(int8[n].q_ratio > bf16[n].q_ratio for n in OUTPUT_NAMES)  # a coarser step, a wider bar
    assert REGISTRY["openvino-int8"].precision == "int8" and REGISTRY["openvino-int8"].optional


def test_the_int8_bar_fails_a_wrong_model() -> None:
    """Outputs off by half their spread (a quantizer that clipped a range, say) fail the int8 bar."""
    cfg = ModelConfig(n_features=59)
    rng = np.random.default_rng(0)
    reference = {n: rng.standard_normal(4096).astype(np.float32) for n in OUTPUT_NAMES}
    noisy = {n: v + np.float32(0.5) * rng.standard_normal(v.size).astype(np.float32) for n, v in reference.items()}
    results = compare(
        reference, noisy, artifact="a", backend="b", inputs="heldout@4096", precision="int8",
        tolerance=spread_bars("int8", cfg),
    )  # fmt: skip
    assert all(f"{n} p99.9" in failures(results) for n in OUTPUT_NAMES)


def test_training_windows_come_from_the_training_dates_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(str(tmp_path / "store"), make_data(tmp_path / "data"))
    seen: list[list[str]] = []
    real = inputs.dated_windows

    def spy(run: runs.Run, dates: list[str], *args: object, **kwargs: object) -> np.ndarray:
        seen.append(list(dates))
        return real(run, dates, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inputs, "dated_windows", spy)
    x = inputs.training_windows(run, 64)
    assert seen == [run.config.splits.train] and not set(seen[0]) & set(run.config.splits.test)
    assert x.shape == (64, run.config.model.seq_len, run.config.model.n_features)
    # spread over the training dates: at most n / dates from each
    both = inputs.dated_windows(run, [*run.config.splits.train, *run.config.splits.val], 64, per_date=32)
    first = inputs.dated_windows(run, run.config.splits.train, 64, per_date=32)
    assert len(both) == 64 and len(first) == 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, runs.Run, api.ExportResult]:
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    torch.set_num_threads(2)
    base = tmp_path_factory.mktemp("int8")
    # width 32: the 16-wide tiny run's few activations make ranges its int8 error exceeds the bar on
    run = make_run(str(base / "store"), make_data(base / "data"), d_model=32)
    # its forecast quality is tests/export/test_quality.py's: a random-weight model's calibration is noise
    cfg = ExportConfig(real_windows=256, random_batches=(64,), int8=True, quality_windows=0)
    result = api.export_run(run, cfg)
    return base, run, result


def test_export_int8_builds_hashes_validates_and_records_it(
    exported: tuple[Path, runs.Run, api.ExportResult],
) -> None:
    _, run, result = exported
    manifest = Manifest.read(run)
    for name in (runs.INT8_XML, runs.INT8_BIN):
        assert manifest.artifacts[name]["precision"] == "int8" and len(manifest.artifacts[name]["sha256"]) == 64
        assert run.exists(runs.export_key(name))
    record = manifest.variants["openvino-int8"]
    assert record["status"] in {"accepted", "rejected"} and record["artifact"] == runs.INT8_XML
    rows = [v for v in manifest.validation if v["backend"] == "openvino-int8"]
    # calibrated on real windows: judged on real (held-out) windows only
    assert {r["inputs"].split("@")[0] for r in rows} == {"heldout"} and {r["output"] for r in rows} == set(OUTPUT_NAMES)
    assert "openvino-int8" in result.variants_line()


def test_an_accepted_int8_variant_is_served_only_when_named(
    exported: tuple[Path, runs.Run, api.ExportResult],
) -> None:
    _, run, _ = exported
    manifest = Manifest.read(run)
    if manifest.variants["openvino-int8"]["status"] != "accepted":
        pytest.skip(f"int8 rejected on this CPU: {manifest.variants['openvino-int8']['reason']}")
    backend = open_backend(run, "openvino-int8")
    x = inputs.heldout_windows(run, 32)
    out = backend.predict(x)
    assert backend.precision == "int8" and all(out[n].shape == (32,) for n in OUTPUT_NAMES)
    assert open_backend(run, "auto").precision == "fp32"  # auto never picks it


def test_an_export_without_int8_records_it_not_built_and_refuses_to_serve_it(
    exported: tuple[Path, runs.Run, api.ExportResult], capsys: pytest.CaptureFixture[str]
) -> None:
    _, run, _ = exported
    manifest = Manifest.read(run)
    manifest.variants["openvino-int8"] = {"status": "not built", "reason": api.NOT_BUILT["int8"]}
    with pytest.raises(RejectedVariantError, match="made without --int8"):
        check_variant(run, manifest, "openvino-int8")
    spec = REGISTRY["openvino-int8"]
    record, results = api.validate_variant(spec, run, {runs.FP32_ONNX: b""}, [], {})
    assert record["status"] == "not built" and results == []


def test_serving_int8_from_an_export_without_it_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openvino")
    run = make_run(str(tmp_path / "store"), make_data(tmp_path / "data"))
    api.export_run(run, ExportConfig(real_windows=0, random_batches=(8,)))
    argv = ["--run", "jen", "--store", str(tmp_path / "store"), "--dates", DAYS[-1].isoformat()]
    assert run_main([*argv, "--backend", "openvino-int8"]) == RejectedVariantError.exit_code
    err = capsys.readouterr().err
    assert "made without --int8" in err and len(err.strip().splitlines()) == 1


def test_an_int8_that_cannot_be_built_is_unavailable_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for but not built (here: no nncf): the export succeeds, notes why, and the variant says so."""
    import sys

    run = make_run(str(tmp_path / "store"), make_data(tmp_path / "data"))
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf -> ImportError
    result = api.export_run(run, ExportConfig(real_windows=64, random_batches=(8,), int8=True, quality_windows=0))
    record = result.manifest.variants["openvino-int8"]
    assert record["status"] == "unavailable" and "nncf is not installed" in record["reason"]
    assert any("int8 variant not built: nncf is not installed" in n for n in result.manifest.notes)
    assert runs.INT8_XML not in result.manifest.artifacts

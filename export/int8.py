"""The int8 variant: ``model.onnx`` quantized after training (static, calibrated) by NNCF for OpenVINO.

Why NNCF on OpenVINO's model (docs/export.md, "INT8"): of the two post-training static
quantizers measured on the same model and windows (NNCF's, and ONNX Runtime's QDQ
``quantize_static``), served by the fastest CPU engine for each, NNCF's IR was the fastest at
the smallest error; ONNX Runtime's QDQ graph ran slower than fp32 OpenVINO, and slower still in
ONNX Runtime itself. ``ModelType.TRANSFORMER`` keeps LayerNorm, softmax and GELU in floating
point and quantizes the matrix products; the output heads (the products on the pooled (B, 2d)
vector: a sliver of the FLOPs) are kept in fp32 too (``head_products``), since every output
is read from them directly.

Calibration uses windows of the run's TRAINING dates only (``inputs.training_windows``): the
held-out dates that validation and the forecast-quality judgement evaluate never shape the
quantization ranges.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tthf.engine import runs
from tthf.engine.store import Store
from tthf.errors import BackendUnavailableError, DataError, StoreError
from tthf.export import inputs

log = logging.getLogger("tthf.export")

#: windows per calibration batch (NNCF runs the model on each batch and collects activation ranges)
CALIBRATION_BATCH = 64


def _import_nncf() -> Any:
    try:
        import nncf
    except ImportError as exc:
        raise BackendUnavailableError(
            "nncf is not installed (it quantizes the int8 variant); pip install 'tthf[cpu]'"
        ) from exc
    return nncf


def head_products(model: Any) -> list[str]:
    """The matrix products of the output heads: those whose result is 2-D (the pooled (B, 2d) path);
    the encoder's products are 3-D or 4-D (batch, time[, head], channel)."""
    return [
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() == "MatMul" and op.get_output_partial_shape(0).rank.get_length() == 2
    ]


def quantize(fp32_onnx: bytes, calibration: np.ndarray) -> dict[str, bytes]:
    """``model.onnx`` quantized to int8 on ``calibration`` windows: {``INT8_XML``: graph, ``INT8_BIN``: weights}.

    Raises ``BackendUnavailableError`` when nncf or openvino is missing.
    """
    nncf = _import_nncf()
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError("openvino is not installed; pip install 'tthf[cpu]'") from exc
    model = ov.Core().read_model(fp32_onnx, b"")
    batches = [calibration[i : i + CALIBRATION_BATCH] for i in range(0, len(calibration), CALIBRATION_BATCH)]
    t0 = time.perf_counter()
    nncf.set_log_level(logging.WARNING)  # its per-node INFO lines and progress bars are not the export's
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(
            model,
            nncf.Dataset(batches),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(batches),
            ignored_scope=nncf.IgnoredScope(names=head_products(model)),
        )
    log.info(
        "quantized model.onnx to int8 on %d training windows in %.1f s", len(calibration), time.perf_counter() - t0
    )
    with tempfile.TemporaryDirectory(prefix="tthf-int8-") as tmp:
        xml = Path(tmp) / runs.INT8_XML
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
        return {runs.INT8_XML: xml.read_bytes(), runs.INT8_BIN: xml.with_suffix(".bin").read_bytes()}


def build(run: runs.Run, fp32_onnx: bytes, n: int, data: Store | None, *, seed: int) -> tuple[dict[str, bytes], str]:
    """The int8 IR calibrated on up to ``n`` windows of ``run``'s training dates: (files, '') or ({}, why not)."""
    try:
        calibration = inputs.training_windows(run, n, data, seed=seed)
        return quantize(fp32_onnx, calibration), ""
    except (BackendUnavailableError, DataError, StoreError) as exc:
        log.warning("int8 variant not built: %s", exc)
        return {}, str(exc)

"""The model's interface, declared once: read by export, validation, every backend and the benchmarks.

As HF Optimum's ``OnnxConfig``: the input name and shape, the output names, the batch
axis, dummy inputs and the tolerance table of each precision live here, so an ONNX
graph, a TensorRT engine and a backend cannot disagree on them. It sits in ``engine/``
(not ``export/``) because the inference backends need it and ``engine/`` never imports
``export/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tthf.engine.config import OUTPUT_NAMES, ModelConfig

INPUT_NAME = "features"
BATCH_DIM = "batch"

#: what every backend's ``predict`` returns: one (B,) float32 array per output name
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


# ``atol`` is in units of each output's scale (``OUTPUT_SCALES``): the model computes
# ret_1h / ret_scale and log(vol_10m / vol_scale) at unit scale, so its rounding error
# scales with them; the confidences are probabilities (scale 1). fp32 bounds leave room
# for reassociation and fused kernels only; fp16 bounds sit well above the errors measured
# on the reference model (docs/export.md) and far below what matters for a forecast.
TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "fp32": {
        "ret_1h": Tolerance(atol=1e-5, rtol=1e-4),
        "vol_10m": Tolerance(atol=1e-5, rtol=1e-4),
        "ret_conf": Tolerance(atol=1e-5, rtol=1e-4),
        "vol_conf": Tolerance(atol=1e-5, rtol=1e-4),
    },
    "fp16": {
        "ret_1h": Tolerance(atol=3e-3, rtol=2e-2),
        "vol_10m": Tolerance(atol=3e-3, rtol=2e-2),
        "ret_conf": Tolerance(atol=5e-3, rtol=0.0),
        "vol_conf": Tolerance(atol=5e-3, rtol=0.0),
    },
}
OUTPUT_SCALES = {"ret_1h": "ret_scale", "vol_10m": "vol_scale"}


def tolerances(precision: str, model: ModelConfig) -> dict[str, Tolerance]:
    """Absolute tolerances of each output for ``precision`` and this run's output scales."""
    out = {}
    for name, tol in TOLERANCES[precision].items():
        scale = float(getattr(model, OUTPUT_SCALES[name])) if name in OUTPUT_SCALES else 1.0
        out[name] = Tolerance(atol=tol.atol * scale, rtol=tol.rtol)
    return out


class InputSet(NamedTuple):
    """A named validation batch: ``"random@37"``, ``"heldout@512#0"`` (kind @ batch size, # part)."""

    name: str
    x: np.ndarray  # (B, seq_len, F) float32


@dataclass(frozen=True)
class ModelIO:
    """Shapes of one run's model: ``features`` (batch, seq_len, n_features) float32 -> four (batch,) outputs."""

    seq_len: int
    n_features: int

    @classmethod
    def of(cls, cfg: ModelConfig) -> ModelIO:
        return cls(cfg.seq_len, cfg.n_features)

    def input_shape(self, batch: int) -> tuple[int, int, int]:
        return (batch, self.seq_len, self.n_features)

    def dummy_inputs(self, batches: Sequence[int], seed: int) -> list[InputSet]:
        """N(0, 1) batches: the model sees scaled features, which are on unit scale."""
        rng = np.random.default_rng(seed)
        return [InputSet(f"random@{b}", rng.standard_normal(self.input_shape(b), dtype=np.float32)) for b in batches]


def empty_outputs(n: int) -> Outputs:
    return {name: np.empty(n, dtype=np.float32) for name in OUTPUT_NAMES}


def predict_in_chunks(predict: Callable[[np.ndarray], Outputs], x: np.ndarray, chunk: int) -> Outputs:
    """``predict`` over consecutive chunks of at most ``chunk`` windows, written into one output array each."""
    out = empty_outputs(len(x))
    for lo in range(0, len(x), chunk):
        part = predict(x[lo : lo + chunk])
        for name in OUTPUT_NAMES:
            out[name][lo : lo + len(part[name])] = part[name]
    return out

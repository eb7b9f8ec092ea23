"""The model's interface, declared once: read by export, validation, every backend and the benchmarks.

As HF Optimum's ``OnnxConfig``: the input name and shape, the output names, the batch
axis, dummy inputs and the bar of each precision live here, so an ONNX
graph, a TensorRT engine and a backend cannot disagree on them. It sits in ``engine/``
(not ``export/``) because the inference backends need it and ``engine/`` never imports
``export/``.
"""

from __future__ import annotations

import math
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
    """An element bar: every element must satisfy ``|artifact - reference| <= atol + rtol * |reference|``."""

    atol: float
    rtol: float


@dataclass(frozen=True)
class SpreadBar:
    """A reduced-precision bar: the error's p99.9 and max, each relative to the reference's spread.

    The spread is the reference output's standard deviation on the input set, floored at
    ``floor`` (output units) so that a saturated confidence cannot make the ratios explode.
    """

    q_ratio: float  # allowed p99.9 |artifact - reference| / spread
    max_ratio: float  # allowed max |artifact - reference| / spread
    floor: float

    def __post_init__(self) -> None:
        if not 0 < self.q_ratio <= self.max_ratio or self.floor <= 0:
            raise ValueError(f"SpreadBar needs 0 < q_ratio <= max_ratio and floor > 0, got {self}")


Bar = Tolerance | SpreadBar

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

#: an int8 range's calibrated max over the rms of the values it quantizes: the range is set by
#: the largest of ~1e5-1e6 calibration activations, heavy-tailed, which sit up to ~8 rms out
INT8_CREST = 8.0


@dataclass(frozen=True)
class Rounding:
    """How a reduced CPU precision rounds a matrix product: each rounding's relative error is
    uniform in [-unit, unit] (relative to a value's rms), and ``per_product`` values are rounded."""

    unit: float
    per_product: int


#: bf16 keeps 8 significant bits (unit roundoff 2**-8) and rounds a product's two operands and its
#: result; int8 rounds its two operands to a step of 2**-7 of the calibrated max (half a step is
#: 2**-8 of it, ``INT8_CREST`` rms) and accumulates in int32, dequantized to fp32 (no third rounding)
ROUNDING = {"bf16": Rounding(2.0**-8, 3), "int8": Rounding(2.0**-8 * INT8_CREST, 2)}
#: |N(0, 1)| at its 99.9th percentile, and a max that N(0, 1) exceeds with probability 7e-6
Z_Q999 = 3.29
Z_MAX = 4.5
#: the spread's floor, in units of the output's scale (ret_scale, vol_scale, 1 for the confidences)
SPREAD_FLOOR = 1e-2


def output_scale(name: str, model: ModelConfig) -> float:
    """The unit an output's rounding error scales with: ret_scale, vol_scale, or 1 for a probability."""
    return float(getattr(model, OUTPUT_SCALES[name])) if name in OUTPUT_SCALES else 1.0


def matmul_depth(model: ModelConfig) -> int:
    """Matrix products on the network's longest path: the input projection, 8 per encoder layer
    (q, k, v, QK^T, attention x V, out, ff1, ff2) and the 2 of an output head."""
    return 3 + 8 * model.n_layers


def spread_bars(precision: str, model: ModelConfig) -> dict[str, SpreadBar]:
    """The bar of a reduced CPU precision, derived from its rounding (``ROUNDING``) and the model's depth.

    Each of the ``matmul_depth`` products rounds ``per_product`` values to ``precision`` (bf16:
    its two operands, and its result where the next op reads it; int8: its two operands),
    each with a relative error uniform in [-u, u] (standard deviation u/sqrt(3)); it
    accumulates at full precision. Independent roundings add in quadrature, so the output's
    error is taken as N(0, sigma) relative to the output's spread, with
    sigma = u/sqrt(3) * sqrt(per_product * depth). The bar is that distribution's p99.9 and a
    max it passes with probability 7e-6 (docs/export.md, "Reduced precision on the CPU", has
    the measurements against it). It is a sanity bar: whether a reduced precision forecasts as
    well as fp32 is the export's forecast-quality judgement (``tthf.export.quality``).
    """
    rounding = ROUNDING[precision]
    sigma = rounding.unit / math.sqrt(3.0) * math.sqrt(rounding.per_product * matmul_depth(model))
    return {
        name: SpreadBar(q_ratio=Z_Q999 * sigma, max_ratio=Z_MAX * sigma, floor=SPREAD_FLOOR * output_scale(name, model))
        for name in OUTPUT_NAMES
    }


def tolerances(precision: str, model: ModelConfig) -> dict[str, Tolerance]:
    """The element bars of fp32 or fp16 at this run's output scales (``atol`` times the output's scale)."""
    return {
        name: Tolerance(atol=tol.atol * output_scale(name, model), rtol=tol.rtol)
        for name, tol in TOLERANCES[precision].items()
    }


def bars(precision: str, model: ModelConfig) -> dict[str, Bar]:
    """Each output's bar for any precision: element bars for fp32 and fp16, spread bars for the
    reduced CPU precisions (``ROUNDING``)."""
    if precision in ROUNDING:
        return dict(spread_bars(precision, model))
    return dict(tolerances(precision, model))


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

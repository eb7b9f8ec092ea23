"""Attributions of single forecasts over the window's (lag, feature) cells.

Integrated gradients (Captum) on the fp32 PyTorch reference: each cell's attribution is its
distance from the baseline times the output's gradient averaged along the straight path from
the baseline to the window. Their sum equals the output's difference from the baseline's
output (completeness) up to the path integral's quadrature error and fp32 rounding, which
``completeness`` measures and checks against ``COMPLETENESS_RTOL``.

Occlusion, for runs with no PyTorch reference (an ONNX-only import), through the serving
backend: a cell's attribution is the output minus the output with that cell set to the
baseline. It needs no gradient, but its cells do not add up to the difference from the baseline
(the model is not additive), so no completeness is claimed.

The baseline is the origin of the scaled space: every feature at the centre its scaler
removes, i.e. a typical minute, the same at every lag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import Outputs

#: integrated gradients' quadrature points (Gauss-Legendre); the completeness check measures their error
IG_STEPS = 64
#: |sum of attributions - (output - baseline output)| must stay under this fraction of |output - baseline output|,
#: or of ``COMPLETENESS_FLOOR`` output scales when the difference is smaller than that
COMPLETENESS_RTOL = 1e-3  # measured: below 1e-5 on tthf's network at IG_STEPS
COMPLETENESS_FLOOR = 1e-3
#: integrated gradients' windows per backward pass (memory: about 50 KB of activations per window)
IG_BATCH = 512


@dataclass(frozen=True)
class Attributions:
    """Attributions of N forecasts: ``cells[name]`` (N, T, F) per output, in the output's units.

    ``outputs`` and ``baseline`` hold each output's value at the windows and at the baseline;
    ``additive``: the cells should add up to their difference (integrated gradients).
    """

    method: str  # "integrated gradients" or "occlusion"
    cells: dict[str, np.ndarray]
    outputs: Outputs
    baseline: Outputs
    additive: bool


def integrated_gradients(model: Any, x: np.ndarray, *, n_steps: int = IG_STEPS) -> Attributions:
    """Integrated gradients of each output of ``model`` (a ``ThreeHeadedTransformer`` in fp32) at windows ``x``."""
    import torch
    from captum.attr import IntegratedGradients

    model = model.eval()

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack(model(inputs), dim=1)  # (B, 4) in OUTPUT_NAMES order

    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    base = torch.zeros_like(inputs)
    ig = IntegratedGradients(forward)
    cells = {
        name: ig.attribute(inputs, baselines=base, target=k, n_steps=n_steps, internal_batch_size=IG_BATCH)
        .detach()
        .numpy()
        for k, name in enumerate(OUTPUT_NAMES)
    }
    with torch.no_grad():
        at_x, at_base = forward(inputs).numpy(), forward(base).numpy()
    return Attributions(
        "integrated gradients",
        cells,
        {n: at_x[:, k] for k, n in enumerate(OUTPUT_NAMES)},
        {n: at_base[:, k] for k, n in enumerate(OUTPUT_NAMES)},
        additive=True,
    )


def occlusion(predict: Any, x: np.ndarray) -> Attributions:
    """Occlusion of each (lag, feature) cell, one forecast at a time, through ``predict`` (a backend's)."""
    n, t, f = x.shape
    cells = {name: np.empty((n, t, f), np.float32) for name in OUTPUT_NAMES}
    outputs = {name: np.empty(n, np.float32) for name in OUTPUT_NAMES}
    baseline = predict(np.zeros((n, t, f), np.float32))
    rows, cols = np.divmod(np.arange(t * f), f)
    for i in range(n):
        occluded = np.repeat(x[i : i + 1], t * f + 1, axis=0)  # the last copy stays whole
        occluded[np.arange(t * f), rows, cols] = 0.0
        out = predict(occluded)
        for name in OUTPUT_NAMES:
            outputs[name][i] = out[name][-1]
            cells[name][i] = (out[name][-1] - out[name][:-1]).reshape(t, f)
    return Attributions("occlusion", cells, outputs, baseline, additive=False)


def completeness(attr: Attributions, scales: dict[str, float]) -> dict[str, Any]:
    """Per output: do the cells add up to the output's difference from the baseline (integrated gradients)?"""
    if not attr.additive:
        return {"checked": False, "reason": f"{attr.method} attributions do not add up to the difference"}
    out: dict[str, Any] = {"checked": True, "rtol": COMPLETENESS_RTOL, "floor_scales": COMPLETENESS_FLOOR}
    for name in OUTPUT_NAMES:
        total = attr.cells[name].sum(axis=(1, 2), dtype=np.float64)
        diff = attr.outputs[name].astype(np.float64) - attr.baseline[name]
        bound = COMPLETENESS_RTOL * np.maximum(np.abs(diff), COMPLETENESS_FLOOR * scales[name])
        out[name] = {
            "sum": total.tolist(),
            "difference": diff.tolist(),
            "ok": (np.abs(total - diff) <= bound).tolist(),
        }
    out["ok"] = all(all(out[name]["ok"]) for name in OUTPUT_NAMES)
    return out

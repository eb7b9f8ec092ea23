"""Attributions of single forecasts: a hand-built model's known answer, completeness, batch independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.explain import attribution
from tthf.engine.explain.attribution import Attributions, completeness, integrated_gradients, occlusion
from tthf.engine.model.interface import output_scale

T, F, K, J = 30, 12, 4, 3
SCALES = dict.fromkeys(OUTPUT_NAMES, 1.0)


class ReadsOneCell(nn.Module):
    """A hand-built model whose four outputs read only feature ``K`` at lag ``J``, each through another nonlinearity."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        v = x[:, T - 1 - J, K]
        return 0.01 * torch.tanh(v), 1e-3 * torch.exp(0.5 * v), torch.sigmoid(v), torch.erf(0.3 * v) ** 2


def windows(n: int, seed: int = 0, f: int = F) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, T, f)).astype(np.float32)


def predict(model: nn.Module):
    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {n: o.numpy() for n, o in zip(OUTPUT_NAMES, model(torch.from_numpy(x)), strict=True)}

    return run


@pytest.mark.parametrize("method", ["integrated gradients", "occlusion"])
def test_a_model_reading_one_cell_gets_every_attribution_on_it(method: str) -> None:
    x = windows(5)
    attr = (
        integrated_gradients(ReadsOneCell(), x)
        if method == "integrated gradients"
        else occlusion(predict(ReadsOneCell()), x)
    )
    assert attr.method == method
    for name in OUTPUT_NAMES:
        cells = attr.cells[name]
        elsewhere = cells.copy()
        elsewhere[:, T - 1 - J, K] = 0.0
        assert np.all(elsewhere == 0.0), name
        assert np.all(np.abs(cells[:, T - 1 - J, K]) > 0), name
    # with one cell, occlusion and integrated gradients both give the whole difference from the baseline
    diff = attr.outputs["ret_1h"] - attr.baseline["ret_1h"]
    np.testing.assert_allclose(attr.cells["ret_1h"][:, T - 1 - J, K], diff, rtol=1e-4, atol=1e-9)


@pytest.fixture(scope="module")
def trained_ig(trained) -> tuple[Attributions, dict[str, float]]:
    model = trained.run.load_model()
    scales = {n: output_scale(n, model.cfg) for n in OUTPUT_NAMES}
    return integrated_gradients(model, windows(6, seed=1, f=model.cfg.n_features)), scales


@pytest.mark.slow
def test_completeness_holds_on_the_trained_network(trained_ig) -> None:
    attr, scales = trained_ig
    check = completeness(attr, scales)
    assert check["ok"] and check["rtol"] == attribution.COMPLETENESS_RTOL
    # and the check is not vacuous: attributions 0.5% too large fail it
    tampered = Attributions(
        attr.method, {n: c * 1.005 for n, c in attr.cells.items()}, attr.outputs, attr.baseline, True
    )
    assert not completeness(tampered, scales)["ok"]


def test_occlusion_claims_no_completeness() -> None:
    attr = occlusion(predict(ReadsOneCell()), windows(2))
    assert completeness(attr, SCALES) == {
        "checked": False,
        "reason": "occlusion attributions do not add up to the difference",
    }


@pytest.mark.slow
def test_identical_windows_get_the_same_attributions_wherever_they_sit_in_a_batch(trained) -> None:
    model = trained.run.load_model()
    x = windows(9, seed=2, f=model.cfg.n_features)
    x[4] = x[8] = x[0]
    attr = integrated_gradients(model, x)
    for name in OUTPUT_NAMES:
        c = attr.cells[name]
        tol = 1e-5 * float(np.abs(c[0]).max())  # stated: 1e-5 of the largest cell
        assert np.abs(c[4] - c[0]).max() <= tol and np.abs(c[8] - c[0]).max() <= tol, name
        assert np.abs(c[1] - c[0]).max() > 100 * tol  # other windows do differ

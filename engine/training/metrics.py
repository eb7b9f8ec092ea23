"""Held-out metrics of the three heads, each next to a naive baseline.

- ``ret_1h`` against the zero-return forecast: MSE, MAE, Pearson and rank correlation
  (IC). ``mse_skill = 1 - MSE / MSE(0)`` is positive only when the model beats zero.
- ``vol_10m`` against the last realized volatility ``sqrt(sum r[t-9..t]^2)`` at the
  window's end minute, which is exactly the ``vol_10m`` label of minute ``t - 10``
  (same mids, same masking rule): MAE, RMSE, QLIKE and correlation.
- ``ret_conf`` / ``vol_conf``: whether higher confidence means smaller error (Spearman
  of confidence vs absolute error, negative is good; error by confidence quintile) and
  calibration (the share of errors within the band vs the mean stated probability).

The meaning of every number is in docs/model.md. Every score is defined once, in
``tthf.engine.evaluation.array_scores``, and tthf-eval recomputes this block from prediction
files with the same function (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tthf.engine.config import ModelConfig
from tthf.engine.evaluation.array_scores import heldout_metrics
from tthf.engine.evaluation.baselines import last_rv
from tthf.engine.features.day import DayFeatures
from tthf.engine.model.network import ThreeHeadedTransformer, vol_floor
from tthf.engine.training.dataset import ThreeHeadedTransformerDataset


@torch.no_grad()
def predict(
    model: ThreeHeadedTransformer, dataset: ThreeHeadedTransformerDataset, batch_size: int = 2048
) -> np.ndarray:
    """``(N, 4)`` float32 [ret_1h, vol_10m, ret_conf, vol_conf] for every window, in order."""
    was_training = model.training
    model.eval()
    out = np.empty((len(dataset), 4), dtype=np.float32)
    for batch in dataset.batches(batch_size):
        out[batch.ids] = torch.stack(model(batch.x), dim=1).numpy()
    model.train(was_training)
    return out


def last_realized_vol(dataset: ThreeHeadedTransformerDataset) -> np.ndarray:
    """The naive volatility forecast for each window: realized vol over its last 10 minutes (tthf-eval's ``last_rv``)."""
    idx = dataset.index
    out = np.full(len(dataset), np.nan, dtype=np.float32)
    for d, day in enumerate(dataset.days):
        rows = np.flatnonzero(idx.day == d)
        out[rows] = last_rv(day.labels[:, :, 1])[idx.sym[rows], idx.minute[rows]]
    return out


def evaluate(
    model: ThreeHeadedTransformer,
    days: Sequence[tuple[np.ndarray, DayFeatures]],
    *,
    stride: int = 1,
    batch_size: int = 2048,
) -> dict:
    """Metrics of ``model`` on every window of ``days`` (scaled features, day) at ``stride``."""
    ds = ThreeHeadedTransformerDataset(days, seq_len=model.cfg.seq_len, stride=stride, require_labels=False)
    metrics = compute_metrics(predict(model, ds, batch_size), ds.labels(), last_realized_vol(ds), model.cfg)
    metrics["dates"] = [d.date.isoformat() for d in ds.days]
    metrics["stride"] = stride
    return metrics


def compute_metrics(pred: np.ndarray, labels: np.ndarray, baseline_vol: np.ndarray, cfg: ModelConfig) -> dict:
    """Metrics from ``pred`` (N, 4), ``labels`` (N, 2) and the naive vol forecast (N,).

    The scores are ``tthf.engine.evaluation.array_scores.heldout_metrics``, the same function
    tthf-eval's pooled block calls: one definition of each score.
    """
    return {
        "n_windows": len(labels),
        **heldout_metrics(
            pred, labels, baseline_vol, floor=vol_floor(cfg), ret_band=cfg.ret_band, vol_band=cfg.vol_band
        ),
    }

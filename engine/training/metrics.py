"""Held-out metrics of the three heads, each next to a naive baseline.

- ``ret_1h`` against the zero-return forecast: MSE, MAE, Pearson and rank correlation
  (IC). ``mse_skill = 1 - MSE / MSE(0)`` is positive only when the model beats zero.
- ``vol_10m`` against the last realized volatility ``sqrt(sum r[t-9..t]^2)`` at the
  window's end minute, which is exactly the ``vol_10m`` label of minute ``t - 10``
  (same mids, same masking rule): MAE, RMSE, QLIKE and correlation.
- ``ret_conf`` / ``vol_conf``: whether higher confidence means smaller error (Spearman
  of confidence vs absolute error, negative is good; error by confidence quintile) and
  calibration (the share of errors within the band vs the mean stated probability).

The meaning of every number is in docs/model.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tthf.engine.config import VOL_HORIZON, ModelConfig
from tthf.engine.features.day import DayFeatures
from tthf.engine.model.network import ThreeHeadedTransformer, vol_floor
from tthf.engine.training.dataset import ThreeHeadedTransformerDataset

N_QUINTILES = 5


@torch.no_grad()
def predict(model: ThreeHeadedTransformer, dataset: ThreeHeadedTransformerDataset, batch_size: int = 2048) -> np.ndarray:
    """``(N, 4)`` float32 [ret_1h, vol_10m, ret_conf, vol_conf] for every window, in order."""
    was_training = model.training
    model.eval()
    out = np.empty((len(dataset), 4), dtype=np.float32)
    for batch in dataset.batches(batch_size):
        out[batch.ids] = torch.stack(model(batch.x), dim=1).numpy()
    model.train(was_training)
    return out


def last_realized_vol(dataset: ThreeHeadedTransformerDataset) -> np.ndarray:
    """The naive volatility forecast for each window: realized vol over its last 10 minutes."""
    idx = dataset.index
    out = np.full(len(dataset), np.nan, dtype=np.float32)
    prior = idx.minute - VOL_HORIZON
    ok = prior >= 0
    for d, day in enumerate(dataset.days):
        rows = np.flatnonzero(ok & (idx.day == d))
        out[rows] = day.labels[idx.sym[rows], prior[rows], 1]
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

    Each target is scored on the windows where its label is present (vol: and the
    baseline too, so that model and baseline are scored on the same windows).
    """
    pred = pred.astype(np.float64)
    labels = labels.astype(np.float64)
    baseline_vol = baseline_vol.astype(np.float64)
    floor = vol_floor(cfg)
    r = np.isfinite(labels[:, 0])
    v = np.isfinite(labels[:, 1]) & np.isfinite(baseline_vol)
    y_ret, f_ret, c_ret = labels[r, 0], pred[r, 0], pred[r, 2]
    y_vol, f_vol, c_vol, b_vol = labels[v, 1], pred[v, 1], pred[v, 3], baseline_vol[v]
    log_err_vol = np.abs(np.log(np.maximum(y_vol, floor)) - np.log(np.maximum(f_vol, floor)))
    return {
        "n_windows": len(labels),
        "ret_1h": {
            "n": int(r.sum()),
            "model": _ret_scores(y_ret, f_ret),
            "baseline_zero": _ret_scores(y_ret, np.zeros_like(y_ret)),
            "mse_skill": _num(1.0 - _mse(y_ret, f_ret) / _mse(y_ret, 0.0)) if r.any() else None,
        },
        "vol_10m": {
            "n": int(v.sum()),
            "model": _vol_scores(y_vol, f_vol, floor),
            "baseline_last_rv": _vol_scores(y_vol, b_vol, floor),
            "qlike_floor": floor,
        },
        "ret_conf": _conf_scores(c_ret, np.abs(y_ret - f_ret), cfg.ret_band),
        "vol_conf": _conf_scores(c_vol, log_err_vol, cfg.vol_band),
    }


def _mse(y: np.ndarray, f: np.ndarray | float) -> float:
    return float(np.mean((y - f) ** 2)) if len(y) else math.nan


def _ret_scores(y: np.ndarray, f: np.ndarray) -> dict:
    return {
        "mse": _num(_mse(y, f)),
        "mae": _num(np.mean(np.abs(y - f)) if len(y) else math.nan),
        "ic": _num(pearson(f, y)),
        "rank_ic": _num(spearman(f, y)),
    }


def _vol_scores(y: np.ndarray, f: np.ndarray, floor: float) -> dict:
    """QLIKE on variances, both floored at ``floor``**2: ``mean(q - log q - 1)``, q = y^2/f^2."""
    q = (np.maximum(y, floor) / np.maximum(f, floor)) ** 2
    return {
        "mae": _num(np.mean(np.abs(y - f)) if len(y) else math.nan),
        "rmse": _num(math.sqrt(_mse(y, f)) if len(y) else math.nan),
        "qlike": _num(np.mean(q - np.log(q) - 1.0) if len(y) else math.nan),
        "corr": _num(pearson(f, y)),
    }


def _conf_scores(conf: np.ndarray, abs_err: np.ndarray, band: float) -> dict:
    inside = abs_err <= band
    quintiles: list[dict[str, Any]] = []
    if len(conf) >= N_QUINTILES:
        order = np.argsort(conf, kind="stable")
        for q, rows in enumerate(np.array_split(order, N_QUINTILES), start=1):
            quintiles.append({
                "quintile": q,
                "n": len(rows),
                "conf_min": _num(conf[rows].min()),
                "conf_max": _num(conf[rows].max()),
                "mean_conf": _num(conf[rows].mean()),
                "coverage": _num(inside[rows].mean()),
                "mean_abs_err": _num(abs_err[rows].mean()),
            })
    return {
        "band": band,
        "n": len(conf),
        "spearman_conf_vs_abs_err": _num(spearman(conf, abs_err)),
        "mean_conf": _num(conf.mean() if len(conf) else math.nan),
        "coverage": _num(inside.mean() if len(conf) else math.nan),
        "max_quintile_calibration_gap": _num(
            max(abs(q["coverage"] - q["mean_conf"]) for q in quintiles) if quintiles else math.nan
        ),
        "by_quintile": quintiles,
    }


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when fewer than 2 points or either side is constant."""
    if len(a) < 2:
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else math.nan


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties."""
    return pearson(rankdata(a), rankdata(b))


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties share their average rank (as scipy.stats.rankdata)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0)[inverse]).astype(np.float64)


def _num(x: float) -> float | None:
    """JSON-safe number: NaN and infinities become null."""
    x = float(x)
    return x if math.isfinite(x) else None

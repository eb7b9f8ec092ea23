"""Forecast scores on plain arrays: the one definition of each, for tthf-eval and training's held-out metrics.

Three kinds of input:

- pooled 1-D arrays of (forecast, realized) pairs: ``mse``, ``pearson``, ``spearman``,
  ``hit_rate``, ``qlike``, ``mincer_zarnowitz``, the confidence scores;
- cross-sectional grids ``(T, N)`` (one row per minute, one column per symbol, NaN where
  missing): ``cross_sectional_ic`` and ``decile_means`` score each row on its own;
- time series of per-minute scores: ``mean_test`` (mean, ICIR and a Newey-West t-statistic).

Where a maintained library computes a score it is used: ranks come from
``scipy.stats.rankdata``, the HAC (Newey-West) and Driscoll-Kraay covariances, the
regressions and the Wald test from statsmodels. The rest is arithmetic on numpy arrays,
each piece tested against a library or a textbook value in tests/evaluation/test_array_scores.py.
docs/evaluation.md says what every number means.

statsmodels is imported inside the two functions that need it: training imports this
module for the plain scores only, and should not pay for statsmodels' import.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

#: buckets of the decile tables (forecast deciles, reliability diagram, error by confidence)
N_DECILES = 10
#: fewest symbols in a minute for its cross-sectional IC to count
MIN_NAMES = 3


def num(x: Any) -> float | None:
    """JSON-safe number: NaN and infinities become null."""
    x = float(x)
    return x if math.isfinite(x) else None


def nums(values: Any) -> list[float | None]:
    """A float array as a JSON-safe list."""
    return [num(v) for v in np.asarray(values, dtype=np.float64).ravel()]


# ---------------------------------------------------------------------------------------
# pooled scores


def mse(y: np.ndarray, f: np.ndarray | float) -> float:
    return float(np.mean((y - f) ** 2)) if len(y) else math.nan


def mae(y: np.ndarray, f: np.ndarray | float) -> float:
    return float(np.mean(np.abs(y - f))) if len(y) else math.nan


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when fewer than 2 points or either side is constant."""
    if len(a) < 2:
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else math.nan


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation, ties at their average rank."""
    if len(a) < 2:
        return math.nan
    return pearson(rankdata(a), rankdata(b))


def hit_rate(y: np.ndarray, f: np.ndarray) -> float:
    """Share of forecasts with the realized sign, over the pairs where neither is exactly 0.

    A zero forecast or a zero return has no direction, so it is left out rather than
    counted as a miss; a forecast that is always 0 has no hit rate (NaN).
    """
    keep = (y != 0) & (f != 0)
    return float(np.mean(np.sign(y[keep]) == np.sign(f[keep]))) if keep.any() else math.nan


def qlike_terms(y: np.ndarray, f: np.ndarray, floor: float) -> np.ndarray:
    """Per-pair QLIKE of volatilities on variances: ``q - log q - 1`` with ``q = y^2 / f^2``.

    Both sides are floored at ``floor`` first: QLIKE is undefined at a realized
    volatility of 0 (a mid that did not move), and the floor turns that into a large but
    finite penalty for forecasts far above the floor (docs/evaluation.md).
    0 for a perfect forecast; a forecast too low costs more than one too high.
    """
    q = (np.maximum(y, floor) / np.maximum(f, floor)) ** 2
    return q - np.log(q) - 1.0


def qlike(y: np.ndarray, f: np.ndarray, floor: float) -> float:
    return float(np.mean(qlike_terms(y, f, floor))) if len(y) else math.nan


def vol_log_error(y: np.ndarray, f: np.ndarray, floor: float) -> np.ndarray:
    """``|log y - log f|``, both floored: the error that ``vol_conf``'s band is stated in."""
    return np.abs(np.log(np.maximum(y, floor)) - np.log(np.maximum(f, floor)))


# ---------------------------------------------------------------------------------------
# cross-sectional scores on (T, N) grids


def _row_pearson(f: np.ndarray, y: np.ndarray, ok: np.ndarray, min_names: int) -> np.ndarray:
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(ok, f - (np.where(ok, f, 0.0).sum(axis=1) / n)[:, None], 0.0)
        dy = np.where(ok, y - (np.where(ok, y, 0.0).sum(axis=1) / n)[:, None], 0.0)
        den = np.sqrt((df * df).sum(axis=1) * (dy * dy).sum(axis=1))
        ic = (df * dy).sum(axis=1) / den
    return np.where((n >= max(min_names, 2)) & (den > 0), ic, np.nan)


def cross_sectional_ic(f: np.ndarray, y: np.ndarray, *, rank: bool = False, min_names: int = MIN_NAMES) -> np.ndarray:
    """``(T,)`` correlation across symbols of each row's forecast and realized value.

    NaN marks a missing cell; a row scores the symbols where both are present, and is NaN
    when fewer than ``min_names`` are or either side is constant. ``rank=True`` gives the
    rank IC (Spearman: Pearson of the ranks among the row's scored symbols).
    """
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(f) & np.isfinite(y)
    if rank:
        f = rankdata(np.where(ok, f, np.nan), axis=1, nan_policy="omit")
        y = rankdata(np.where(ok, y, np.nan), axis=1, nan_policy="omit")
    return _row_pearson(f, y, ok, min_names)


def decile_means(f: np.ndarray, y: np.ndarray, n_bins: int = N_DECILES) -> np.ndarray:
    """``(T, n_bins)`` mean realized value per forecast bucket within each row (lowest first).

    Each row's scored symbols are ranked by forecast (ties at their average rank) and cut
    into ``n_bins`` buckets of equal size (±1); rows with fewer than ``n_bins`` symbols are NaN.
    """
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(f) & np.isfinite(y)
    n = ok.sum(axis=1)
    ranks = rankdata(np.where(ok, f, np.nan), axis=1, nan_policy="omit")
    with np.errstate(invalid="ignore"):
        bucket = np.floor((ranks - 1.0) * n_bins / n[:, None])
    rows, cols = np.nonzero(ok & (n >= n_bins)[:, None])
    cell = rows * n_bins + bucket[rows, cols].astype(np.int64)
    size = len(f) * n_bins
    sums = np.bincount(cell, weights=y[rows, cols], minlength=size)
    counts = np.bincount(cell, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).reshape(len(f), n_bins)


# ---------------------------------------------------------------------------------------
# time-series inference


def hac_lags(horizon: int, step: int = 1) -> int:
    """Newey-West lags that cover a label overlap: ``horizon`` minutes sampled every ``step``.

    Scores of consecutive minutes share ``horizon - 1`` minutes of their label, so they are
    correlated up to ``horizon - 1`` steps apart; ``ceil(horizon / step)`` lags cover that
    with one to spare (docs/evaluation.md, "HAC lags").
    """
    return max(1, math.ceil(horizon / max(step, 1)))


def mean_test(series: np.ndarray, lags: int) -> dict[str, Any]:
    """Mean, standard deviation, ICIR and the t-statistics of the mean of a score series.

    ``t_naive`` treats the points as independent (as alphalens' ``ttest_1samp`` does);
    ``t_hac`` uses Newey-West standard errors (Bartlett kernel, ``lags`` lags, no small-sample
    correction) from statsmodels: the honest one when the points overlap. NaN points are dropped.
    """
    import statsmodels.api as sm

    x = np.asarray(series, np.float64)
    x = x[np.isfinite(x)]
    out: dict[str, Any] = {
        "n": len(x),
        "hac_lags": int(lags),
        "mean": None,
        "std": None,
        "icir": None,
        "se_naive": None,
        "se_hac": None,
        "t_naive": None,
        "t_hac": None,
        "p_hac": None,
    }
    if len(x) < 2:
        out["mean"] = num(x.mean()) if len(x) else None
        return out
    std = float(x.std(ddof=1))
    ones = np.ones((len(x), 1))
    hac = sm.OLS(x, ones).fit(cov_type="HAC", cov_kwds={"maxlags": int(lags), "use_correction": False})
    se_naive = std / math.sqrt(len(x))
    out.update(
        mean=num(x.mean()),
        std=num(std),
        icir=num(x.mean() / std if std > 0 else math.nan),
        se_naive=num(se_naive),
        se_hac=num(hac.bse[0]),
        t_naive=num(x.mean() / se_naive if se_naive > 0 else math.nan),
        t_hac=num(hac.tvalues[0]),
        p_hac=num(hac.pvalues[0]),
    )
    return out


def mincer_zarnowitz(y: np.ndarray, f: np.ndarray, *, lags: int, time: np.ndarray | None = None) -> dict[str, Any]:
    """Regression ``y = a + b f + e`` of realized on forecast; a forecast is unbiased when a = 0, b = 1.

    Standard errors are Newey-West (``lags``) over the rows in order, or, with ``time``
    (an integer period per row; a panel of symbols x minutes), Driscoll-Kraay: HAC on the
    per-period sums, robust to correlation across symbols and across ``lags`` periods.
    ``wald_p`` is the p-value of the joint test a = 0 and b = 1.
    """
    import statsmodels.api as sm

    y, f = np.asarray(y, np.float64), np.asarray(f, np.float64)
    keys = ("n", "intercept", "slope", "se_intercept", "se_slope", "r2", "wald_p")
    if len(y) < 3 or not np.ptp(f) > 0:
        return dict.fromkeys(keys) | {"n": len(y)}
    if time is None:
        cov: dict[str, Any] = {"cov_type": "HAC", "cov_kwds": {"maxlags": int(lags), "use_correction": False}}
    else:
        periods = np.unique(np.asarray(time), return_inverse=True)[1]
        cov = {"cov_type": "hac-groupsum", "cov_kwds": {"time": periods, "maxlags": int(lags), "use_correction": False}}
    res = sm.OLS(y, np.column_stack([np.ones_like(f), f])).fit(**cov)
    wald = res.wald_test((np.eye(2), np.array([0.0, 1.0])), scalar=True, use_f=False)
    return {
        "n": len(y),
        "intercept": num(res.params[0]),
        "slope": num(res.params[1]),
        "se_intercept": num(res.bse[0]),
        "se_slope": num(res.bse[1]),
        "r2": num(res.rsquared),
        "wald_p": num(wald.pvalue),
    }


def grouped_regression(y: np.ndarray, f: np.ndarray, group: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Per-group OLS of ``y`` on ``f`` (intercept, slope, R^2), in closed form with bincount.

    For the by-minute Mincer-Zarnowitz curves: 390 small regressions in one pass. NaN
    where a group has fewer than 3 rows or a constant forecast.
    """
    y, f = np.asarray(y, np.float64), np.asarray(f, np.float64)

    def total(w: np.ndarray | None) -> np.ndarray:
        return np.bincount(group, weights=w, minlength=n_groups)

    with np.errstate(invalid="ignore", divide="ignore"):
        n = total(None)
        mf, my = total(f) / n, total(y) / n
        df, dy = f - mf[group], y - my[group]
        sff, syy, sfy = total(df * df), total(dy * dy), total(df * dy)
        ok = (n >= 3) & (sff > 0)
        slope = np.where(ok, sfy / sff, np.nan)
        intercept = np.where(ok, my - slope * mf, np.nan)
        r2 = np.where(ok & (syy > 0), sfy * sfy / (sff * syy), np.nan)
    return {"n": n.astype(np.int64), "intercept": intercept, "slope": slope, "r2": r2}


def binned_means(f: np.ndarray, y: np.ndarray, n_bins: int) -> dict[str, list[float | None]]:
    """Mean forecast and mean realized value in ``n_bins`` equal-count bins of the forecast.

    The points of a binned Mincer-Zarnowitz scatter: an unbiased forecast lies on the diagonal.
    """
    if len(f) < n_bins:
        return {"forecast": [], "realized": []}
    parts = np.array_split(np.argsort(f), n_bins)
    return {"forecast": nums([f[p].mean() for p in parts]), "realized": nums([y[p].mean() for p in parts])}


# ---------------------------------------------------------------------------------------
# confidence scores


def confidence_bins(conf: np.ndarray, abs_err: np.ndarray, band: float, n_bins: int) -> list[dict[str, Any]]:
    """The forecasts cut into ``n_bins`` equal-count bins by stated confidence (lowest first).

    Per bin: ``n``, the confidence range, ``mean_conf`` (the mean stated probability of
    landing in the band), ``coverage`` (the share that did) and ``mean_abs_err``. Ties are
    broken by position (a stable sort), so the bins always have equal counts (±1).
    """
    if len(conf) < n_bins:
        return []
    inside = abs_err <= band
    order = np.argsort(conf, kind="stable")
    out = []
    for b, rows in enumerate(np.array_split(order, n_bins), start=1):
        out.append(
            {
                "bin": b,
                "n": len(rows),
                "conf_min": num(conf[rows].min()),
                "conf_max": num(conf[rows].max()),
                "mean_conf": num(conf[rows].mean()),
                "coverage": num(inside[rows].mean()),
                "mean_abs_err": num(abs_err[rows].mean()),
            }
        )
    return out


def coverage_gap(conf: np.ndarray, abs_err: np.ndarray, band: float, bins: list[dict[str, Any]]) -> dict[str, Any]:
    """How far realized coverage is from the stated probability, in percentage points.

    ``overall_pp``: coverage minus mean stated probability over all forecasts (positive:
    under-confident); ``mean_abs_pp``: the bins' absolute gaps weighted by their counts
    (the expected calibration error); ``max_abs_pp``: the largest bin gap. 0 when calibrated.
    """
    if not len(conf):
        return {"overall_pp": None, "mean_abs_pp": None, "max_abs_pp": None}
    gaps = np.array([b["coverage"] - b["mean_conf"] for b in bins]) if bins else np.array([np.nan])
    weights = np.array([b["n"] for b in bins]) if bins else np.array([1])
    return {
        "overall_pp": num(100 * (np.mean(abs_err <= band) - conf.mean())),
        "mean_abs_pp": num(100 * np.average(np.abs(gaps), weights=weights)),
        "max_abs_pp": num(100 * np.max(np.abs(gaps))),
    }


def risk_coverage(conf: np.ndarray, abs_err: np.ndarray, n_points: int = 50) -> dict[str, Any]:
    """Mean absolute error of the most confident x% of forecasts, for x from 1/n_points to 100%.

    If higher confidence means smaller errors the curve rises from left to right. ``aurc``
    is the area under it over every cut-off (lower is better); ``aurc_oracle`` is the same
    area with the forecasts ordered by their actual error (the best any confidence can do)
    and ``mean_abs_err`` the flat line of a confidence that ranks nothing.
    """
    n = len(conf)
    if not n:
        return {"coverage": [], "mean_abs_err_at": [], "aurc": None, "aurc_oracle": None, "mean_abs_err": None}
    risk = np.cumsum(abs_err[np.argsort(-conf)]) / np.arange(1, n + 1)
    oracle = np.cumsum(np.sort(abs_err)) / np.arange(1, n + 1)
    cover = np.linspace(1 / n_points, 1.0, n_points)
    at = np.maximum(np.ceil(cover * n).astype(np.int64), 1) - 1
    return {
        "coverage": nums(cover),
        "mean_abs_err_at": nums(risk[at]),
        "aurc": num(risk.mean()),
        "aurc_oracle": num(oracle.mean()),
        "mean_abs_err": num(abs_err.mean()),
    }


def confidence_summary(conf: np.ndarray, abs_err: np.ndarray, band: float, n_bins: int) -> dict[str, Any]:
    """Ranking (Spearman of confidence and |error|: negative is good) and calibration in one dict."""
    bins = confidence_bins(conf, abs_err, band, n_bins)
    return {
        "band": band,
        "n": len(conf),
        "spearman_conf_vs_abs_err": num(spearman(conf, abs_err)),
        "mean_conf": num(conf.mean() if len(conf) else math.nan),
        "coverage": num(np.mean(abs_err <= band) if len(conf) else math.nan),
        "max_calibration_gap": num(max(abs(b["coverage"] - b["mean_conf"]) for b in bins) if bins else math.nan),
        "bins": bins,
    }


# ---------------------------------------------------------------------------------------
# the held-out summary training writes into metrics.json


def _ret_scores(y: np.ndarray, f: np.ndarray) -> dict[str, float | None]:
    return {"mse": num(mse(y, f)), "mae": num(mae(y, f)), "ic": num(pearson(f, y)), "rank_ic": num(spearman(f, y))}


def _vol_scores(y: np.ndarray, f: np.ndarray, floor: float) -> dict[str, float | None]:
    return {
        "mae": num(mae(y, f)),
        "rmse": num(math.sqrt(mse(y, f)) if len(y) else math.nan),
        "qlike": num(qlike(y, f, floor)),
        "corr": num(pearson(f, y)),
    }


def _quintiles(summary: dict[str, Any]) -> dict[str, Any]:
    """``confidence_summary`` under the key names of training's metrics.json."""
    bins = summary.pop("bins")
    summary["max_quintile_calibration_gap"] = summary.pop("max_calibration_gap")
    summary["by_quintile"] = [{"quintile": b.pop("bin"), **b} for b in bins]
    return summary


def heldout_metrics(
    pred: np.ndarray, labels: np.ndarray, last_rv: np.ndarray, *, floor: float, ret_band: float, vol_band: float
) -> dict[str, Any]:
    """Pooled scores of ``pred`` (N, 4) [ret_1h, vol_10m, ret_conf, vol_conf] against ``labels`` (N, 2).

    The ``test`` block of a run's metrics.json (docs/model.md), and the "pooled" block of
    a tthf-eval report, so that the two agree by construction. Each target is scored where
    its label exists (volatility: and the last-10-minute baseline ``last_rv`` too, so that
    model and baseline are scored on the same rows); confidence in quintiles.
    """
    pred, labels, last_rv = (np.asarray(a, np.float64) for a in (pred, labels, last_rv))
    r = np.isfinite(labels[:, 0])
    v = np.isfinite(labels[:, 1]) & np.isfinite(last_rv)
    y_ret, f_ret, c_ret = labels[r, 0], pred[r, 0], pred[r, 2]
    y_vol, f_vol, c_vol, b_vol = labels[v, 1], pred[v, 1], pred[v, 3], last_rv[v]
    return {
        "ret_1h": {
            "n": int(r.sum()),
            "model": _ret_scores(y_ret, f_ret),
            "baseline_zero": _ret_scores(y_ret, np.zeros_like(y_ret)),
            "mse_skill": num(1.0 - mse(y_ret, f_ret) / mse(y_ret, 0.0)) if r.any() else None,
        },
        "vol_10m": {
            "n": int(v.sum()),
            "model": _vol_scores(y_vol, f_vol, floor),
            "baseline_last_rv": _vol_scores(y_vol, b_vol, floor),
            "qlike_floor": floor,
        },
        "ret_conf": _quintiles(confidence_summary(c_ret, np.abs(y_ret - f_ret), ret_band, 5)),
        "vol_conf": _quintiles(confidence_summary(c_vol, vol_log_error(y_vol, f_vol, floor), vol_band, 5)),
    }

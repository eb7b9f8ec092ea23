"""From date panels to the numbers of metrics.json: per date, then over all dates.

Each date is reduced, as soon as it is built, to its table row, its per-minute
cross-sectional series (IC, rank IC, forecast deciles) and the flat values at its
forecast cells; the ``(M, S)`` grids are dropped. ``summarize`` pools the dates. Every
statistic comes from ``array_scores``; this module only decides which cells go into which
score. docs/evaluation.md describes the result key by key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tthf.engine.config import RET_HORIZON, VOL_HORIZON
from tthf.engine.evaluation import array_scores
from tthf.engine.evaluation.panel import BASELINES, DatePanel

#: share of zero realized volatilities on a date above which it gets a warning
ZERO_VOL_WARN = 0.05
#: points of the binned Mincer-Zarnowitz scatter
CALIBRATION_BINS = 20
RET_FORECASTS = {"model": "ret_1h", "baseline_reversal": "reversal"}
VOL_FORECASTS = {
    "model": "vol_10m",
    "baseline_last_rv": "last_rv",
    "baseline_ewma_rv": "ewma_rv",
    "baseline_same_minute": "same_minute",
}


@dataclass(frozen=True)
class Bands:
    """What the confidence scores and QLIKE are stated in (the run's config)."""

    ret_band: float
    vol_band: float
    vol_floor: float


@dataclass
class DateScores:
    """One date's contribution: its table row, per-minute series (M,) and flat values (N,)."""

    date: str
    row: dict[str, Any]
    minute: np.ndarray
    flat: dict[str, np.ndarray]
    series: dict[str, np.ndarray]
    deciles: dict[str, np.ndarray]
    step: int
    sparse: bool
    absent: dict[str, str] = field(default_factory=dict)  # baselines that cannot be computed, and why


def score_date(panel: DatePanel, bands: Bands) -> DateScores:
    """Reduce a panel to what ``summarize`` needs and the date's row of the per-date table."""
    g = panel.grids
    series, deciles = {}, {}
    for key, name in RET_FORECASTS.items():
        series[f"{key}_ic"] = array_scores.cross_sectional_ic(g[name], g["y_ret"])
        series[f"{key}_rank_ic"] = array_scores.cross_sectional_ic(g[name], g["y_ret"], rank=True)
        deciles[key] = array_scores.decile_means(g[name], g["y_ret"])
    minute = np.nonzero(panel.has)[0].astype(np.int32)
    flat = {name: panel.flat(name) for name in g}
    return DateScores(
        panel.date.isoformat(),
        _date_row(panel, flat, series, bands),
        minute,
        flat,
        series,
        deciles,
        panel.step,
        panel.sparse,
        panel.absent,
    )


def _date_row(panel: DatePanel, flat: dict[str, np.ndarray], series: dict[str, np.ndarray], bands: Bands) -> dict:
    y_ret, y_vol = flat["y_ret"], flat["y_vol"]
    r, v = np.isfinite(y_ret), np.isfinite(y_vol)
    zero_share = float(np.mean(y_vol[v] == 0)) if v.any() else math.nan
    ret_err = np.abs(y_ret[r] - flat["ret_1h"][r])
    vol_err = array_scores.vol_log_error(y_vol[v], flat["vol_10m"][v], bands.vol_floor)
    row = {
        "date": panel.date.isoformat(),
        "rows": panel.rows,
        "forecasts": panel.forecasts,
        "n_ret": int(r.sum()),
        "n_vol": int(v.sum()),
        "ic": array_scores.num(_nanmean(series["model_ic"])),
        "rank_ic": array_scores.num(_nanmean(series["model_rank_ic"])),
        "reversal_ic": None
        if "baseline_reversal" in panel.absent
        else array_scores.num(_nanmean(series["baseline_reversal_ic"])),
        "hit_rate": array_scores.num(array_scores.hit_rate(y_ret[r], flat["ret_1h"][r])),
        "ret_mse": array_scores.num(array_scores.mse(y_ret[r], flat["ret_1h"][r])),
        "vol_qlike": array_scores.num(array_scores.qlike(y_vol[v], flat["vol_10m"][v], bands.vol_floor)),
        "vol_mse": array_scores.num(array_scores.mse(y_vol[v], flat["vol_10m"][v])),
        "ret_coverage": array_scores.num(np.mean(ret_err <= bands.ret_band) if r.any() else math.nan),
        "ret_mean_conf": array_scores.num(flat["ret_conf"][r].mean() if r.any() else math.nan),
        "vol_coverage": array_scores.num(np.mean(vol_err <= bands.vol_band) if v.any() else math.nan),
        "vol_mean_conf": array_scores.num(flat["vol_conf"][v].mean() if v.any() else math.nan),
        "zero_vol_share": array_scores.num(zero_share),
        "vol_qlike_paired": _paired_qlike(flat, v, bands.vol_floor),
    }
    row["warnings"] = _warnings(panel, row, zero_share)
    return row


def _paired_qlike(flat: dict[str, np.ndarray], v: np.ndarray, floor: float) -> dict[str, dict[str, Any]]:
    """Per vol baseline: model and baseline QLIKE on the cells where both and the label exist (the rolling
    history's "against the best baseline"; a baseline has no cells on a date it cannot be computed)."""
    out = {}
    for key, name in list(VOL_FORECASTS.items())[1:]:
        ok = v & np.isfinite(flat[name]) & np.isfinite(flat["vol_10m"])
        y = flat["y_vol"][ok]
        out[key] = {
            "n": int(ok.sum()),
            "model": array_scores.num(array_scores.qlike(y, flat["vol_10m"][ok], floor) if ok.any() else math.nan),
            "baseline": array_scores.num(array_scores.qlike(y, flat[name][ok], floor) if ok.any() else math.nan),
        }
    return out


def _warnings(panel: DatePanel, row: dict, zero_share: float) -> list[str]:
    out = []
    if panel.unmatched:
        out.append(f"{panel.unmatched} forecasts name a symbol or minute that is not in the raw data; not scored")
    if row["n_ret"] == 0:
        out.append("no realized ret_1h: every forecast's label is missing (horizon past the close or no quotes)")
    if row["n_vol"] and zero_share == 1.0:
        out.append("every realized vol_10m is 0 (no mid moved): QLIKE is scored at the floor only")
    elif row["n_vol"] and zero_share > ZERO_VOL_WARN:
        out.append(f"{zero_share:.1%} of realized vol_10m are 0 (QLIKE scores them at the floor)")
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else math.nan


def _by_minute(days: Sequence[DateScores], key: str, n_minutes: int) -> np.ndarray:
    """Mean over dates of a per-minute series, by minute of the session (NaN where no date has one)."""
    total, count = np.zeros(n_minutes), np.zeros(n_minutes)
    for d in days:
        x = d.series[key]
        ok = np.isfinite(x)
        total[: len(x)] += np.where(ok, x, 0.0)
        count[: len(x)] += ok
    with np.errstate(invalid="ignore"):
        return total / count


def summarize(days: Sequence[DateScores], bands: Bands) -> dict[str, Any]:
    """metrics.json's scores over every scored date (``days`` in date order, at least one)."""
    step = min(d.step for d in days)
    n_minutes = max(len(next(iter(d.series.values()))) for d in days)
    flat = {name: np.concatenate([d.flat[name] for d in days]) for name in days[0].flat}
    period = np.concatenate([i * n_minutes + d.minute for i, d in enumerate(days)])
    minute = np.concatenate([d.minute for d in days])
    pred = np.stack([flat[n] for n in ("ret_1h", "vol_10m", "ret_conf", "vol_conf")], axis=1)
    labels = np.stack([flat["y_ret"], flat["y_vol"]], axis=1)
    absent = {key: why for d in days for key, why in d.absent.items()}
    out: dict[str, Any] = {
        "mode": "sparse" if any(d.sparse for d in days) else "dense",
        "step_minutes": step,
        "rows": int(sum(d.row["rows"] for d in days)),
        "forecasts": len(flat["y_ret"]),
        "ret_1h": _ret_section(days, flat, step, n_minutes),
        "vol_10m": {**_vol_section(flat, period, minute, step, n_minutes, bands), "by_date": _qlike_by_date(days)},
        "ret_conf": _conf_section(flat["ret_conf"], flat["y_ret"], flat["ret_1h"], bands.ret_band, None),
        "vol_conf": _conf_section(flat["vol_conf"], flat["y_vol"], flat["vol_10m"], bands.vol_band, bands.vol_floor),
        "pooled": array_scores.heldout_metrics(
            pred, labels, flat["last_rv"], floor=bands.vol_floor, ret_band=bands.ret_band, vol_band=bands.vol_band
        ),
        "per_date": [d.row for d in days],
        "baselines_absent": absent,
    }
    for section in ("ret_1h", "vol_10m"):
        for key in absent.keys() & out[section].keys():
            out[section][key] = {**_blank(out[section][key]), "absent": absent[key]}
    return out


def _blank(tree: Any) -> Any:
    """``tree`` with every number replaced by null (its shape kept for readers): an absent baseline's section."""
    if isinstance(tree, dict):
        return {k: _blank(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_blank(v) for v in tree]
    return None if isinstance(tree, (int, float)) and not isinstance(tree, bool) else tree


def _ret_section(days: Sequence[DateScores], flat: dict[str, np.ndarray], step: int, n_minutes: int) -> dict:
    lags = array_scores.hac_lags(RET_HORIZON, step)
    r = np.isfinite(flat["y_ret"])
    y = flat["y_ret"][r].astype(np.float64)
    out: dict[str, Any] = {"n": int(r.sum()), "hac_lags": lags}
    for key, name in RET_FORECASTS.items():
        f = flat[name][r].astype(np.float64)
        table = np.concatenate([d.deciles[key] for d in days])
        spread = table[:, -1] - table[:, 0]
        with np.errstate(invalid="ignore"):
            decile_means = np.nanmean(table, axis=0) if np.isfinite(table).any() else np.full(table.shape[1], np.nan)
        out[key] = {
            "ic": array_scores.mean_test(np.concatenate([d.series[f"{key}_ic"] for d in days]), lags),
            "rank_ic": array_scores.mean_test(np.concatenate([d.series[f"{key}_rank_ic"] for d in days]), lags),
            "hit_rate": array_scores.num(array_scores.hit_rate(y, f)),
            "deciles": array_scores.nums(decile_means),
            "top_minus_bottom": array_scores.mean_test(spread, lags),
        }
    out["model"]["mse"] = array_scores.num(array_scores.mse(y, flat["ret_1h"][r].astype(np.float64)))
    out["baseline_zero"] = {
        "mse": array_scores.num(array_scores.mse(y, 0.0)),
        "hit_rate": None,
        "ic": None,
        "rank_ic": None,
    }
    mse0 = array_scores.mse(y, 0.0)
    out["mse_skill"] = array_scores.num(1.0 - out["model"]["mse"] / mse0) if r.any() and mse0 > 0 else None
    out["by_minute"] = {
        "minute": list(range(n_minutes)),
        **{
            f"{key}_{kind}": array_scores.nums(_by_minute(days, f"{key}_{kind}", n_minutes))
            for key in RET_FORECASTS
            for kind in ("ic", "rank_ic")
        },
    }
    return out


def _vol_section(
    flat: dict[str, np.ndarray], period: np.ndarray, minute: np.ndarray, step: int, n_minutes: int, bands: Bands
) -> dict:
    """Model and baselines on the cells where the label and every baseline exist."""
    lags = array_scores.hac_lags(VOL_HORIZON, step)
    floor = bands.vol_floor
    common = np.isfinite(flat["y_vol"]) & np.isfinite(flat["vol_10m"])
    for name in BASELINES[1:]:
        common &= np.isfinite(flat[name])
    y = flat["y_vol"][common].astype(np.float64)
    mins = minute[common]
    count = np.bincount(mins, minlength=n_minutes)
    out: dict[str, Any] = {
        "n": int(common.sum()),
        "hac_lags": lags,
        "qlike_floor": floor,
        "zero_realized_share": array_scores.num(np.mean(y == 0) if len(y) else math.nan),
        "by_minute": {"minute": list(range(n_minutes)), "n": count.tolist()},
    }
    for key, name in VOL_FORECASTS.items():
        f = flat[name][common].astype(np.float64)
        terms = array_scores.qlike_terms(y, f, floor)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["by_minute"][f"{key}_qlike"] = array_scores.nums(np.bincount(mins, terms, n_minutes) / count)
            out["by_minute"][f"{key}_mse"] = array_scores.nums(np.bincount(mins, (y - f) ** 2, n_minutes) / count)
        out[key] = {
            "qlike": array_scores.num(terms.mean() if len(y) else math.nan),
            "mse": array_scores.num(array_scores.mse(y, f)),
            "mse_var": array_scores.num(array_scores.mse(y * y, f * f)),
            "mz": array_scores.mincer_zarnowitz(y, f, lags=lags, time=period[common]),
            "calibration_bins": array_scores.binned_means(f, y, CALIBRATION_BINS),
        }
    mz = array_scores.grouped_regression(y, flat["vol_10m"][common].astype(np.float64), mins, n_minutes)
    out["by_minute"].update({f"model_mz_{k}": array_scores.nums(mz[k]) for k in ("intercept", "slope", "r2")})
    return out


def _qlike_by_date(days: Sequence[DateScores]) -> dict[str, dict[str, Any]]:
    """Per vol baseline, its date-by-date contest with the model (each date's ``vol_qlike_paired``, the
    rolling history's numbers): on how many dates the model's QLIKE is lower, and each side's median.

    The pooled ``qlike`` is a mean over every cell of every date (training's number), so a few cells where
    a forecast sits at the floor and the price then moves (q in the tens of thousands) can decide it; a
    date-by-date count cannot be carried by one date. The report shows both.
    """
    out = {}
    for key in list(VOL_FORECASTS)[1:]:
        pairs = [d.row["vol_qlike_paired"][key] for d in days]
        pairs = [p for p in pairs if p["model"] is not None and p["baseline"] is not None]
        model = np.array([p["model"] for p in pairs], np.float64)
        base = np.array([p["baseline"] for p in pairs], np.float64)
        out[key] = {
            "dates": len(pairs),
            "model_lower": int((model < base).sum()),
            "model_median": array_scores.num(np.median(model) if pairs else math.nan),
            "baseline_median": array_scores.num(np.median(base) if pairs else math.nan),
        }
    return out


def _conf_section(conf: np.ndarray, y: np.ndarray, f: np.ndarray, band: float, floor: float | None) -> dict:
    """Reliability by stated-confidence decile, error by decile, risk-coverage; ``floor``: vol (log errors)."""
    ok = np.isfinite(y)
    conf = conf[ok].astype(np.float64)
    y, f = y[ok].astype(np.float64), f[ok].astype(np.float64)
    err = np.abs(y - f) if floor is None else array_scores.vol_log_error(y, f, floor)
    summary = array_scores.confidence_summary(conf, err, band, array_scores.N_DECILES)
    summary["by_decile"] = summary.pop("bins")
    summary["coverage_gap"] = array_scores.coverage_gap(conf, err, band, summary["by_decile"])
    summary["risk_coverage"] = array_scores.risk_coverage(conf, err)
    return summary


#: a confidence section's numbers that need a stated probability (a ``band`` kind's): calibration
CALIBRATION_KEYS = ("band", "mean_conf", "coverage", "max_calibration_gap")
#: why a ``score`` confidence is not calibrated (metrics.json and the report say it)
SCORE_NOTE = "a score states no probability: ranking only (Spearman, error by decile, risk-coverage), no calibration"


def ranking_only(section: dict[str, Any]) -> dict[str, Any]:
    """A confidence section for a ``score`` kind (an imported run's opaque score): its calibration numbers
    (coverage against a band, reliability) blanked, its ranking numbers kept."""
    out = {**section, **dict.fromkeys(CALIBRATION_KEYS), "kind": "score", "calibration": SCORE_NOTE}
    out["coverage_gap"] = dict.fromkeys(section["coverage_gap"])
    out["by_decile"] = [{**b, "mean_conf": None, "coverage": None} for b in section["by_decile"]]
    return out


#: the numbers of training's metrics.json ``test`` block that tthf-eval recomputes
TRAINING_KEYS = (
    ("ret_1h", "n"),
    ("ret_1h", "model", "mse"),
    ("ret_1h", "model", "ic"),
    ("ret_1h", "model", "rank_ic"),
    ("ret_1h", "baseline_zero", "mse"),
    ("ret_1h", "mse_skill"),
    ("vol_10m", "n"),
    ("vol_10m", "model", "rmse"),
    ("vol_10m", "model", "qlike"),
    ("vol_10m", "model", "corr"),
    ("vol_10m", "baseline_last_rv", "qlike"),
    ("ret_conf", "coverage"),
    ("ret_conf", "mean_conf"),
    ("ret_conf", "spearman_conf_vs_abs_err"),
    ("vol_conf", "coverage"),
    ("vol_conf", "mean_conf"),
    ("vol_conf", "spearman_conf_vs_abs_err"),
)


def compare_with_training(test: dict[str, Any], pooled: dict[str, Any], dates: list[str]) -> dict[str, Any]:
    """The pooled scores next to training's held-out ones; comparable only on the same dates."""
    same = sorted(test.get("dates", [])) == sorted(dates)
    rows = []
    for path in TRAINING_KEYS:
        a, b = _dig(test, path), _dig(pooled, path)
        diff = abs(a - b) / max(abs(a), abs(b), 1e-300) if a is not None and b is not None else None
        rows.append({"key": ".".join(path), "training": a, "evaluation": b, "rel_diff": diff})
    diffs = [r["rel_diff"] for r in rows if r["rel_diff"] is not None]
    return {
        "same_dates": same,
        "training_dates": test.get("dates", []),
        "rows": rows,
        "max_rel_diff": max(diffs) if diffs else None,
    }


def _dig(tree: dict[str, Any], path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return float(tree) if isinstance(tree, (int, float)) else None

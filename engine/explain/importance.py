"""Permutation importance: how much skill a run loses when one feature's (or one lag's) information is removed.

Information is removed by permuting across symbols within each forecast minute: the
windows that end at the same minute swap the chosen columns among themselves (one random
permutation per minute, the same for every removed column). The permuted input keeps the
feature's distribution at that minute and its time structure inside each window, so the
model sees realistic inputs, but the link between a symbol's feature and its own outcome
is gone (docs/evaluation.md, "Explanations"). Replacing a feature by a constant would
instead show the model inputs it never saw in training.

Three kinds of item are removed, one at a time: each feature (all lags), each feature
family (its features together, with one permutation) and each lag (all features at once).
A date's importance of an item is the date's skill with the original windows minus its
skill with the item permuted: the drop in ret_1h IC and rank IC (mean over the sampled
minutes of the cross-sectional correlation) and the rise in vol_10m QLIKE. The dates give
a mean and a 95% t-interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tthf.engine.evaluation.array_scores import cross_sectional_ic, qlike
from tthf.engine.features.formulas import FEATURE_GROUPS
from tthf.engine.model.interface import Outputs

#: the three skill measures, each signed so that a positive importance is lost skill
MEASURES = ("ret_ic_drop", "ret_rank_ic_drop", "vol_qlike_rise")
#: the family of the features tthf does not compute and an import's ``features.groups`` does not name
OTHER_FAMILY = "other"

Predict = Callable[[np.ndarray], Outputs]


@dataclass(frozen=True)
class Sample:
    """One date's sampled windows with what happened after them, sorted by (minute, symbol).

    ``x`` (N, T, F) float32 scaled windows; ``minute`` and ``sym`` (N,) the window's last
    minute and symbol on the date's grid; ``ret`` and ``vol`` (N,) the realized ret_1h and
    vol_10m (NaN where unknown).
    """

    date: str
    x: np.ndarray
    minute: np.ndarray
    sym: np.ndarray
    ret: np.ndarray
    vol: np.ndarray


@dataclass(frozen=True)
class Item:
    """What one permutation removes: ``features`` (indices into F) at ``lags`` (indices into T)."""

    kind: str  # feature, family or lag
    name: str
    features: tuple[int, ...]
    lags: tuple[int, ...]


def families(feature_names: Sequence[str], groups: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """The feature families, in first-appearance order: an imported run's ``groups`` (its spec's
    ``features.groups``) where they name the feature, else docs/features.md's (price, volume, ...);
    the remaining features (tthf does not compute them) form one family, ``OTHER_FAMILY``."""
    groups = groups or {}
    out: dict[str, list[str]] = {}
    for name in feature_names:
        out.setdefault(groups.get(name) or FEATURE_GROUPS.get(name, OTHER_FAMILY), []).append(name)
    return out


def items(feature_names: Sequence[str], seq_len: int, groups: Mapping[str, str] | None = None) -> list[Item]:
    """Every feature, every family (``families``), every lag (lag 0 = the forecast minute, the window's last row)."""
    index = {n: i for i, n in enumerate(feature_names)}
    all_lags = tuple(range(seq_len))
    every = tuple(range(len(feature_names)))
    return [
        *(Item("feature", n, (i,), all_lags) for n, i in index.items()),
        *(
            Item("family", f, tuple(index[n] for n in names), all_lags)
            for f, names in families(feature_names, groups).items()
        ),
        *(Item("lag", str(lag), every, (seq_len - 1 - lag,)) for lag in range(seq_len)),
    ]


def permuted(sample: Sample, item: Item, rng: np.random.Generator) -> np.ndarray:
    """``sample.x`` with ``item``'s cells swapped among the windows of each minute (one permutation per minute)."""
    order = np.lexsort((rng.random(len(sample.minute)), sample.minute))  # minutes are contiguous and sorted
    x = sample.x.copy()
    lags, feats = np.array(item.lags)[:, None], np.array(item.features)[None, :]
    x[:, lags, feats] = sample.x[order][:, lags, feats]
    return x


def skill(sample: Sample, out: Outputs, vol_floor: float) -> dict[str, float]:
    """The date's ret_1h IC and rank IC (mean over minutes) and vol_10m QLIKE of ``out``."""
    minutes, row = np.unique(sample.minute, return_inverse=True)
    n_sym = int(sample.sym.max()) + 1

    def grid(values: np.ndarray) -> np.ndarray:
        g = np.full((len(minutes), n_sym), np.nan)
        g[row, sample.sym] = values
        return g

    f, y = grid(out["ret_1h"]), grid(sample.ret)
    ok = np.isfinite(sample.vol)
    return {
        "ret_ic": _nanmean(cross_sectional_ic(f, y)),
        "ret_rank_ic": _nanmean(cross_sectional_ic(f, y, rank=True)),
        "vol_qlike": qlike(sample.vol[ok], out["vol_10m"][ok], vol_floor),
    }


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def losses(base: dict[str, float], perm: dict[str, float]) -> dict[str, float]:
    """Lost skill, signed so that more is more important: IC drops, QLIKE rises."""
    return {
        "ret_ic_drop": base["ret_ic"] - perm["ret_ic"],
        "ret_rank_ic_drop": base["ret_rank_ic"] - perm["ret_rank_ic"],
        "vol_qlike_rise": perm["vol_qlike"] - base["vol_qlike"],
    }


def date_importance(
    predict: Predict,
    sample: Sample,
    all_items: Sequence[Item],
    vol_floor: float,
    *,
    seed: int = 0,
    on_item: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The date's base skill and each item's lost skill; ``on_item(n)`` after each item (n windows run)."""
    rng = np.random.default_rng(seed)
    base = skill(sample, predict(sample.x), vol_floor)
    lost = []
    for item in all_items:
        lost.append(losses(base, skill(sample, predict(permuted(sample, item, rng)), vol_floor)))
        if on_item:
            on_item(len(sample.x))
    return base, lost


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% t-interval across dates (no interval from one date)."""
    from scipy.stats import t

    v = np.array([x for x in values if math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "lo": None, "hi": None, "n": 1}
    half = float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(v)}


def summarize(
    all_items: Sequence[Item], bases: Sequence[dict[str, float]], per_date: Sequence[list[dict[str, float]]]
) -> dict[str, Any]:
    """Per kind (feature, family, lag), each item's measures across dates, sorted by ret IC drop (lags by lag)."""
    out: dict[str, Any] = {"base": {k: interval([b[k] for b in bases]) for k in ("ret_ic", "ret_rank_ic", "vol_qlike")}}
    for kind in ("feature", "family", "lag"):
        rows = [
            {
                "name": item.name,
                **{m: interval([d[i][m] for d in per_date]) for m in MEASURES},
            }
            for i, item in enumerate(all_items)
            if item.kind == kind
        ]
        out[kind] = rows if kind == "lag" else sorted(rows, key=_falling("ret_ic_drop"))
    return out


def _falling(measure: str) -> Callable[[dict[str, Any]], float]:
    def key(row: dict[str, Any]) -> float:
        mean = row[measure]["mean"]
        return -mean if mean is not None else math.inf

    return key


def ranking(rows: list[dict[str, Any]], measure: str) -> list[str]:
    """Names by falling mean of ``measure`` (items without one last)."""
    return [r["name"] for r in sorted(rows, key=_falling(measure))]

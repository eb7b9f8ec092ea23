"""Per-feature standardization, fitted on the training split only and saved as ``scalers.json``.

Fitting streams over days (a per-day mean and sum of squared deviations, merged with
Chan's parallel update), so a long training range never has to be held in memory. Only
masked-valid minutes count: those are the only minutes a valid window contains.
``transform`` reorders the day's columns to the run's feature order by name, so a run
never silently reads a feature in the wrong column; a run may use any subset of the
computed features, in any order (an imported run's model order). ``clip`` is ``inf`` for
scalers that never clip (an imported sklearn scaler); ``scalers.json`` writes it as null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tthf.engine.features.day import DayFeatures
from tthf.errors import DataError, FeatureMismatchError, RunFormatError

#: scaled values are clipped to [-CLIP, CLIP] so that one bad print cannot dominate a window
CLIP = 10.0
#: a std at or below this (times max(1, |mean|)) means the feature is constant: std becomes 1
_STD_FLOOR = 1e-9
#: the kernel's clip for scalers that never clip: float32's largest value (the kernel wants a finite clip)
_NO_CLIP = float(np.finfo(np.float32).max)
#: rows per block while fitting (bounds the float64 temporaries to ~30 MB at 59 features)
_CHUNK = 65_536
_FORMAT = "tthf-scalers"
_VERSION = 1
_KEYS = {"format", "version", "clip", "count", "features"}
_FEATURE_KEYS = {"name", "mean", "std"}
_FIX_MISMATCH = (
    "the features this tthf computes do not match the run; use the tthf version that trained "
    "the run (config.json 'tthf_version') or retrain the run with this version"
)


@dataclass(frozen=True)
class Scalers:
    """``(x - mean) / std``, clipped to ``[-clip, clip]``, per feature name."""

    names: tuple[str, ...]
    mean: np.ndarray  # (F,) float64
    std: np.ndarray  # (F,) float64, > 0
    count: int
    clip: float = CLIP

    @classmethod
    def fit(cls, days: Iterable[DayFeatures]) -> Scalers:
        """Fit on the masked-valid minutes of ``days`` (pass the training days only)."""
        names: tuple[str, ...] | None = None
        count, mean, m2 = 0, np.zeros(0), np.zeros(0)
        for day in days:
            if names is None:
                names = tuple(day.feature_names)
                _check_unique(names, f"features of {day.date}")
                mean, m2 = np.zeros(len(names)), np.zeros(len(names))
            elif tuple(day.feature_names) != names:
                raise FeatureMismatchError(
                    f"{day.date}: feature names differ from the earlier training days "
                    f"({_diff(names, day.feature_names)}); build all days with the same tthf version"
                )
            rows = day.features[day.mask]  # (n, F)
            for lo in range(0, rows.shape[0], _CHUNK):
                count, mean, m2 = _merge(count, mean, m2, rows[lo : lo + _CHUNK].astype(np.float64))
        if names is None or count == 0:
            raise DataError(
                "cannot fit scalers: the training days have no masked-valid minutes; "
                "check the data root and the training dates (every day may be missing quotes)"
            )
        std = np.sqrt(m2 / count)
        std = np.where(std > _STD_FLOOR * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return cls(names=names, mean=mean, std=std, count=count)

    def transform(
        self, features: np.ndarray, names: Sequence[str], expected_names: Sequence[str], *, what: str = "features"
    ) -> np.ndarray:
        """``features`` (..., F) with columns ``names``, scaled, as float32 in ``expected_names`` order.

        The result is a new C-contiguous array; ``what`` names the features in errors.
        """
        cols, mean, inv_std, clip = self.kernel_scale(names, expected_names, what=what)
        out = features.take(cols, axis=-1)
        out -= mean
        out *= inv_std
        np.clip(out, -clip, clip, out=out)
        return out

    def kernel_scale(
        self, names: Sequence[str], expected_names: Sequence[str], *, what: str = "features"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """``transform`` as data: (columns of ``names`` in ``expected_names`` order, float32 mean, float32 1/std, clip).

        The features kernel takes it (``compute_grid(scale=...)``) and applies it as it writes,
        with the same float32 operations, so the scaled grid has ``transform``'s bits
        without the unscaled one ever being made. The checks are ``transform``'s.
        """
        expected = tuple(expected_names)
        _check_unique(expected, "the run's feature names")
        _check_cover(tuple(names), expected, what, subset=True)
        _check_cover(self.names, expected, "scalers.json")
        index = {n: i for i, n in enumerate(names)}
        own_index = {n: i for i, n in enumerate(self.names)}
        cols = np.array([index[n] for n in expected], dtype=np.int32)
        params = np.array([own_index[n] for n in expected], dtype=np.intp)
        mean = self.mean[params].astype(np.float32)
        inv_std = (1.0 / self.std[params]).astype(np.float32)
        return cols, mean, inv_std, min(float(self.clip), _NO_CLIP)

    def subset(self, names: Sequence[str]) -> Scalers:
        """The scalers of ``names`` only (a run that reads some inputs from files scales each source apart)."""
        _check_cover(self.names, tuple(names), "scalers.json", subset=True)
        index = np.array([self.names.index(n) for n in names], dtype=np.intp)
        return Scalers(tuple(names), self.mean[index], self.std[index], self.count, self.clip)

    def transform_day(self, day: DayFeatures, expected_names: Sequence[str]) -> np.ndarray:
        """The day's features scaled, as ``(S, M, F)`` float32 in ``expected_names`` order."""
        return self.transform(day.features, day.feature_names, expected_names, what=f"features of {day.date}")

    def to_json(self) -> str:
        doc = {
            "format": _FORMAT,
            "version": _VERSION,
            "clip": self.clip if math.isfinite(self.clip) else None,
            "count": self.count,
            "features": [
                {"name": n, "mean": float(m), "std": float(s)} for n, m, s in zip(self.names, self.mean, self.std)
            ],
        }
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "scalers.json") -> Scalers:
        fix = "re-create the run with tthf-train (an imported run with tthf-import --overwrite)"
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunFormatError(f"{source}: not valid JSON ({exc}); {fix}") from exc
        if not isinstance(doc, dict) or set(doc) != _KEYS:
            got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise RunFormatError(f"{source}: expected an object with keys {sorted(_KEYS)}, got {got}; {fix}")
        if doc["format"] != _FORMAT or doc["version"] != _VERSION:
            raise RunFormatError(
                f"{source}: format {doc['format']!r} version {doc['version']!r}, this tthf reads "
                f"{_FORMAT!r} version {_VERSION}; use the tthf version that wrote it or {fix}"
            )
        if doc["clip"] is not None and (not _is_number(doc["clip"]) or doc["clip"] <= 0):
            raise RunFormatError(f"{source}: 'clip' must be a positive number or null, got {doc['clip']!r}; {fix}")
        if not isinstance(doc["count"], int) or isinstance(doc["count"], bool) or doc["count"] <= 0:
            raise RunFormatError(f"{source}: 'count' must be a positive integer, got {doc['count']!r}; {fix}")
        if not isinstance(doc["features"], list) or not doc["features"]:
            raise RunFormatError(f"{source}: 'features' must be a non-empty list; {fix}")
        names, means, stds = [], [], []
        for i, item in enumerate(doc["features"]):
            if not isinstance(item, dict) or set(item) != _FEATURE_KEYS:
                raise RunFormatError(
                    f"{source}: features[{i}] must have exactly the keys {sorted(_FEATURE_KEYS)}; {fix}"
                )
            name, mean, std = item["name"], item["mean"], item["std"]
            if not isinstance(name, str) or not name:
                raise RunFormatError(f"{source}: features[{i}].name must be a non-empty string; {fix}")
            if not _is_number(mean) or not _is_number(std) or std <= 0:
                raise RunFormatError(
                    f"{source}: feature {name!r} needs a finite mean and a positive finite std, "
                    f"got mean={mean!r} std={std!r}; {fix}"
                )
            names.append(name)
            means.append(float(mean))
            stds.append(float(std))
        try:
            _check_unique(tuple(names), source)
        except FeatureMismatchError as exc:
            raise RunFormatError(f"{exc}; {fix}") from exc
        return cls(
            names=tuple(names),
            mean=np.array(means),
            std=np.array(stds),
            count=doc["count"],
            clip=math.inf if doc["clip"] is None else float(doc["clip"]),
        )


def _merge(count: int, mean: np.ndarray, m2: np.ndarray, rows: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al.'s update of (count, mean, sum of squared deviations) with a block of rows."""
    n = rows.shape[0]
    block_mean = rows.mean(axis=0)
    block_m2 = ((rows - block_mean) ** 2).sum(axis=0)
    total = count + n
    delta = block_mean - mean
    return total, mean + delta * (n / total), m2 + block_m2 + delta**2 * (count * n / total)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_unique(names: tuple[str, ...], what: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FeatureMismatchError(f"{what}: feature name(s) {dup} appear more than once")


def _diff(expected: Sequence[str], have: Sequence[str]) -> str:
    have_set, expected_set = set(have), set(expected)
    missing = [n for n in expected if n not in have_set]
    extra = [n for n in have if n not in expected_set]
    parts = [f"missing {missing}" if missing else "", f"extra {extra}" if extra else ""]
    return "; ".join(p for p in parts if p) or "same names in a different order"


def _check_cover(have: tuple[str, ...], expected: tuple[str, ...], what: str, *, subset: bool = False) -> None:
    """``have`` must hold exactly the names of ``expected`` (any order); with ``subset``, at least them."""
    _check_unique(have, what)
    if not set(expected) <= set(have) if subset else set(have) != set(expected):
        raise FeatureMismatchError(
            f"{what}: feature names do not match the run's {len(expected)} features: "
            f"{_diff(expected, have)}; {_FIX_MISMATCH}"
        )

"""Permutation importance: known answers from a hand-built model, then the planted structure on a trained run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tthf.engine.explain import importance
from tthf.engine.explain.importance import Item, Sample
from tthf.engine.features.formulas import FEATURE_GROUPS, FEATURE_NAMES
from tthf.engine.model.interface import Outputs

T, F = 30, len(FEATURE_NAMES)


def synthetic(n_minutes: int = 40, n_symbols: int = 25, seed: int = 0) -> Sample:
    """Random windows whose outcomes follow feature ``K`` at lag ``J``: ret = x + noise, log vol = x / 2 + noise."""
    rng = np.random.default_rng(seed)
    n = n_minutes * n_symbols
    x = rng.standard_normal((n, T, F)).astype(np.float32)
    signal = x[:, T - 1 - J, K].astype(np.float64)
    minute = np.repeat(np.arange(n_minutes), n_symbols) + T - 1
    sym = np.tile(np.arange(n_symbols), n_minutes)
    ret = signal + rng.standard_normal(n)
    vol = np.exp(0.5 * signal + 0.3 * rng.standard_normal(n))
    return Sample("2024-01-02", x, minute, sym, ret, vol)


K, J = FEATURE_NAMES.index("rv_10"), 7


def reads_one_cell(x: np.ndarray) -> Outputs:
    """A hand-built model that reads only feature ``K`` at lag ``J``."""
    v = x[:, T - 1 - J, K]
    half = np.full(len(x), 0.5, np.float32)
    return {"ret_1h": v, "vol_10m": np.exp(0.5 * v), "ret_conf": half, "vol_conf": half}


def by_name(summary: dict, kind: str) -> dict[str, dict]:
    return {row["name"]: row for row in summary[kind]}


def test_a_model_reading_one_cell_puts_all_importance_on_it() -> None:
    samples = [synthetic(seed=s) for s in range(3)]
    items = importance.items(FEATURE_NAMES, T)
    runs = [importance.date_importance(reads_one_cell, s, items, vol_floor=1e-6, seed=i) for i, s in enumerate(samples)]
    summary = importance.summarize(items, [b for b, _ in runs], [lost for _, lost in runs])
    assert summary["base"]["ret_ic"]["mean"] > 0.5
    expected = {"feature": FEATURE_NAMES[K], "family": FEATURE_GROUPS[FEATURE_NAMES[K]], "lag": str(J)}
    for kind, name in expected.items():
        rows = by_name(summary, kind)
        for measure in importance.MEASURES:
            assert rows[name][measure]["lo"] > 0.1, (kind, measure)  # lost for sure
            others = [r[measure]["mean"] for n, r in rows.items() if n != name]
            assert others == [0.0] * len(others), (kind, measure)  # nothing else moves the outputs


def test_permutation_swaps_only_the_item_and_only_within_a_minute() -> None:
    sample = synthetic(n_minutes=5, n_symbols=8)
    item = Item("feature", "x", (3, 5), tuple(range(T)))
    x = importance.permuted(sample, item, np.random.default_rng(0))
    untouched = np.ones(F, bool)
    untouched[[3, 5]] = False
    assert np.array_equal(x[:, :, untouched], sample.x[:, :, untouched])
    assert not np.array_equal(x[:, :, 3], sample.x[:, :, 3])
    for m in np.unique(sample.minute):
        rows = sample.minute == m
        # the same windows' columns, in another order, and features 3 and 5 moved together
        assert sorted(map(bytes, x[rows][:, :, [3, 5]])) == sorted(map(bytes, sample.x[rows][:, :, [3, 5]]))


def test_lag_items_remove_one_row_of_every_feature() -> None:
    lags = [i for i in importance.items(FEATURE_NAMES, T) if i.kind == "lag"]
    assert [i.name for i in lags] == [str(j) for j in range(T)]
    assert lags[0].lags == (T - 1,) and lags[-1].lags == (0,) and all(len(i.features) == F for i in lags)


def test_families_follow_the_feature_table_and_group_unknown_features() -> None:
    fam = importance.families([*FEATURE_NAMES[:3], "my_signal", "imbalance"])
    assert fam == {
        "price": list(FEATURE_NAMES[:3]),
        importance.OTHER_FAMILY: ["my_signal"],
        "microstructure": ["imbalance"],
    }


def test_an_imports_groups_name_the_families_and_the_rest_keep_theirs() -> None:
    names = [*FEATURE_NAMES[:2], "my_signal", "my_other", "their_flow"]
    groups = {FEATURE_NAMES[1]: "returns", "my_signal": "returns", "their_flow": "flow"}
    fam = importance.families(names, groups)
    assert fam == {
        "price": [FEATURE_NAMES[0]],
        "returns": [FEATURE_NAMES[1], "my_signal"],
        importance.OTHER_FAMILY: ["my_other"],
        "flow": ["their_flow"],
    }
    family_items = {i.name: i.features for i in importance.items(names, T, groups) if i.kind == "family"}
    assert family_items == {"price": (0,), "returns": (1, 2), importance.OTHER_FAMILY: (3,), "flow": (4,)}


def test_interval_is_a_t_interval_across_dates() -> None:
    got = importance.interval([1.0, 2.0, 3.0, math.nan])
    assert got["mean"] == 2.0 and got["n"] == 3
    assert got["hi"] - 2.0 == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
    assert importance.interval([0.5])["lo"] is None and importance.interval([])["mean"] is None

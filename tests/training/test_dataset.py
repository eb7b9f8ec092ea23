"""Dataset windows against a naive loop over the window rule, and the batch path vs items."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from tthf.engine.features.day import DayFeatures
from tthf.engine.training.dataset import ThreeHeadedTransformerDataset

L = 30


def random_day(seed: int, n_sym: int = 5, n_min: int = 140, n_feat: int = 4) -> DayFeatures:
    """A day with holes in the mask and labels missing near the close and where masked."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_sym, n_min, n_feat)).astype(np.float32)
    mask = rng.random((n_sym, n_min)) > 0.03
    mask[0] = True  # one clean symbol, one with no usable minute
    mask[1] = False
    labels = rng.standard_normal((n_sym, n_min, 2)).astype(np.float32) * 1e-3
    labels[:, n_min - 60 :, 0] = np.nan
    labels[:, n_min - 10 :, 1] = np.nan
    labels[~mask] = np.nan
    labels[rng.random((n_sym, n_min)) < 0.05, 1] = np.nan
    labels[..., 1] = np.abs(labels[..., 1])
    date = dt.date(2024, 3, 4) + dt.timedelta(days=seed)
    minutes = (np.datetime64(f"{date}T14:30") + np.arange(n_min).astype("timedelta64[m]")).astype("datetime64[us]")
    return DayFeatures(
        date, [f"S{i}" for i in range(n_sym)], minutes, [f"f{i}" for i in range(n_feat)], x, mask, labels
    )


def scaled(day: DayFeatures) -> tuple[np.ndarray, DayFeatures]:
    return (day.features * 2.0 + 1.0).astype(np.float32), day


def naive_windows(days: list[DayFeatures], stride: int, require_labels: bool) -> list[tuple[int, int, int]]:
    out = []
    for d, day in enumerate(days):
        n_sym, n_min = day.mask.shape
        for s in range(n_sym):
            for t in range(n_min):
                if t < L - 1 or (t - (L - 1)) % stride or not day.mask[s, t - L + 1 : t + 1].all():
                    continue
                if require_labels and not np.isfinite(day.labels[s, t]).all():
                    continue
                out.append((d, s, t))
    return out


@pytest.fixture(scope="module")
def days() -> list[DayFeatures]:
    return [random_day(i, n_min=140 if i != 1 else 95) for i in range(3)]


@pytest.mark.parametrize("stride", [1, 3, 7])
@pytest.mark.parametrize("require_labels", [True, False])
def test_windows_equal_the_naive_loop(days, stride: int, require_labels: bool) -> None:
    ds = ThreeHeadedTransformerDataset([scaled(d) for d in days], stride=stride, require_labels=require_labels)
    want = naive_windows(days, stride, require_labels)
    assert len(want) > 20
    assert list(zip(ds.index.day.tolist(), ds.index.sym.tolist(), ds.index.minute.tolist())) == want
    for i in range(0, len(ds), 7):
        d, s, t = want[i]
        x, y = ds[i]
        assert x.shape == (L, 4) and x.dtype == torch.float32 and y.shape == (2,)
        np.testing.assert_array_equal(x.numpy(), scaled(days[d])[0][s, t - L + 1 : t + 1])
        np.testing.assert_array_equal(y.numpy(), days[d].labels[s, t])
        day, symbol, minute = ds.keys(i)
        assert (day.date, symbol, minute) == (days[d].date, f"S{s}", days[d].minutes[t])
    labels = ds.labels()
    np.testing.assert_array_equal(labels, np.stack([ds[i][1].numpy() for i in range(len(ds))]))
    if require_labels:
        assert np.isfinite(labels).all()


@pytest.mark.parametrize("shuffle", [False, True])
def test_batch_path_equals_item_path(days, shuffle: bool) -> None:
    ds = ThreeHeadedTransformerDataset([scaled(d) for d in days], stride=2, require_labels=False)
    seen = []
    for batch in ds.batches(37, shuffle=shuffle, generator=torch.Generator().manual_seed(5)):
        assert batch.x.shape[0] == batch.y.shape[0] == len(batch.ids) <= 37
        for row, i in enumerate(batch.ids):
            x, y = ds[int(i)]
            assert torch.equal(batch.x[row], x)
            np.testing.assert_array_equal(batch.y[row].numpy(), y.numpy())
        seen.extend(batch.ids.tolist())
    assert sorted(seen) == list(range(len(ds)))
    assert (seen == list(range(len(ds)))) != shuffle


def test_shuffle_is_deterministic_given_the_generator(days) -> None:
    ds = ThreeHeadedTransformerDataset([scaled(d) for d in days], stride=1)

    def order(seed: int) -> list[int]:
        return [i for b in ds.batches(50, shuffle=True, generator=torch.Generator().manual_seed(seed)) for i in b.ids]

    assert order(1) == order(1) != order(2)


def test_drop_last_and_empty(days) -> None:
    ds = ThreeHeadedTransformerDataset([scaled(d) for d in days], stride=1)
    sizes = [len(b.ids) for b in ds.batches(64, drop_last=True)]
    assert sizes == [64] * (len(ds) // 64)
    empty_day = random_day(9)
    empty_day.mask[:] = False
    empty = ThreeHeadedTransformerDataset([scaled(empty_day)])
    assert len(empty) == 0 and list(empty.batches(8)) == [] and empty.labels().shape == (0, 2)


def test_limit_draws_a_fresh_subset_per_call(days) -> None:
    ds = ThreeHeadedTransformerDataset([scaled(d) for d in days], stride=1)
    gen = torch.Generator().manual_seed(3)
    first, second = (
        [int(i) for b in ds.batches(32, shuffle=True, generator=gen, limit=100) for i in b.ids] for _ in range(2)
    )
    assert len(first) == len(second) == 100 == len(set(first))
    assert set(first) != set(second)
    assert [len(b.ids) for b in ds.batches(32, limit=100)] == [32, 32, 32, 4]


def test_scaled_features_must_match_the_day_grid(days) -> None:
    with pytest.raises(ValueError, match="float32"):
        ThreeHeadedTransformerDataset([(days[0].features.astype(np.float64), days[0])])
    with pytest.raises(ValueError, match="grid"):
        ThreeHeadedTransformerDataset([(days[0].features[:, :-1], days[0])])

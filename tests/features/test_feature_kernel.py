"""The C++ features kernel against the numpy oracle (tests/features/feature_oracle.py), and its guards.

Tolerance. Kernel and oracle evaluate every feature in float64 with the same operations in
the same order (the same block sums, the same two-pass stds, the same closed-form EMAs,
no fused multiply-add), so they differ at most by what the math library rounds
differently, a few float64 ulps, before both round to float32. After that rounding the
two values are equal or one float32 ulp apart (6e-8 relative), a little more where a
feature subtracts nearly equal numbers; ``TOL = 1e-6 * max(1, |x|)`` allows ~16 float32 ulps
and nothing a wrong formula could hide behind (``test_a_perturbed_feature_fails`` checks
that a change of 1e-5 relative in one feature is caught). Masks must be equal.
"""

from __future__ import annotations

import feature_oracle as oracle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tthf.engine import _kernels
from tthf.engine.features import FEATURE_NAMES, DayState, build_day, clean_rows, compute_grid
from tthf.engine.features.formulas import _NEUTRAL_VALUES
from tthf.engine.features.grid import GRID_COLUMNS, DayGrid
from tthf.engine.testing import DAYS, make_data, with_null_quotes
from tthf.errors import UsageError

TOL = 1e-6


def mismatches(kernel: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Features whose worst error exceeds TOL * max(1, |x|): name -> that error over the allowance."""
    a, b = kernel.astype(np.float64), reference.astype(np.float64)
    ratio = np.abs(a - b) / (TOL * np.maximum(1.0, np.abs(b)))
    worst = ratio.reshape(-1, len(FEATURE_NAMES)).max(axis=0, initial=0.0)
    return {name: float(r) for name, r in zip(FEATURE_NAMES, worst, strict=True) if r > 1}


def random_grid(seed: int, n_minutes: int, n_sym: int, p_row: float, p_quote: float) -> dict[str, np.ndarray]:
    """A clean (minutes, symbols) grid as ``grid_arrays`` makes one, with every missing pattern.

    Rows missing with probability ``1 - p_row`` (halts, feed gaps: NaN everywhere, volume 0),
    quotes missing whole with ``1 - p_quote`` (null quotes), a symbol without any quote,
    locked quotes, zero sizes, runs of constant prices (the std floor), missing trade prices,
    minutes without trades.
    """
    rng = np.random.default_rng(seed)
    shape = (n_minutes, n_sym)
    level = 10 ** rng.uniform(-1, 3, n_sym)
    steps = rng.normal(0, 1e-3, shape) * (rng.random(shape) < 0.7)  # 30% of minutes repeat the price
    mid = level * np.exp(np.cumsum(steps, axis=0))
    half = mid * rng.uniform(0, 2e-3, shape) * (rng.random(shape) < 0.9)  # some locked quotes
    g = {
        "bid": mid - half,
        "ask": mid + half,
        "bid_size": rng.integers(0, 50, shape).astype(float) * 100,
        "ask_size": rng.integers(0, 50, shape).astype(float) * 100,
    }
    traded = rng.random(shape) < 0.6
    volume = np.where(traded, rng.integers(1, 10_000, shape), 0).astype(float)
    jitter = mid * rng.uniform(0, 1e-3, shape)
    g.update(open=mid, high=mid + jitter, low=mid - jitter, close=mid + jitter / 2, vwap=mid)
    for name in ("open", "high", "low", "close", "vwap"):
        g[name] = np.where(traded & (rng.random(shape) < 0.9), g[name], np.nan)
    g["volume"] = volume
    g["trade_count"] = np.where(rng.random(shape) < 0.8, rng.integers(0, 50, shape), np.nan).astype(float)
    no_quote = (rng.random(shape) > p_quote) | (np.arange(n_sym) == n_sym - 1)[None, :] * (n_sym > 1)
    for name in ("bid", "ask", "bid_size", "ask_size"):
        g[name][no_quote] = np.nan
    no_row = rng.random(shape) > p_row
    for name in GRID_COLUMNS:
        g[name][no_row] = 0.0 if name == "volume" else np.nan
    return {name: np.ascontiguousarray(g[name]) for name in GRID_COLUMNS}


grids = st.builds(
    random_grid,
    seed=st.integers(0, 2**32 - 1),
    n_minutes=st.integers(1, 100),
    n_sym=st.integers(1, 5),
    p_row=st.sampled_from([1.0, 0.9, 0.5, 0.1]),
    p_quote=st.sampled_from([1.0, 0.8, 0.3, 0.0]),
)


@settings(max_examples=150, deadline=None)
@given(grids, st.data())
def test_kernel_matches_the_numpy_oracle_on_random_grids(g, data):
    w = g["bid"].shape[0]
    n_minutes = data.draw(st.integers(w, 400))
    start = data.draw(st.integers(0, w))
    features, mask, _ = compute_grid(g, n_minutes, start, labels=False)
    ref, ref_mask = oracle.oracle_grid(g, n_minutes, start)
    assert np.array_equal(mask, ref_mask)
    assert features.shape == ref.shape
    assert np.isfinite(features).all()
    assert not mismatches(features, ref)


@settings(max_examples=80, deadline=None)
@given(grids, st.data())
def test_minute_by_minute_with_late_rows_gives_the_batch_bits(g, data):
    """What the real-time engine does: grow the grid, resume the state, invalidate, ask for the tail."""
    w = g["bid"].shape[0]
    batch, batch_mask, _ = compute_grid(g, w, labels=False)
    state = DayState()
    cut = 0
    while cut < w:
        cut = min(w, cut + data.draw(st.integers(1, 30)))
        if data.draw(st.booleans()):
            state.invalidate(data.draw(st.integers(0, cut)))  # a late row
        start = data.draw(st.integers(0, cut))
        so_far = {name: column[:cut] for name, column in g.items()}
        tail, mask, _ = compute_grid(so_far, w, start, state=state, labels=False)
        assert tail.tobytes() == batch[:, start:cut].tobytes()
        assert np.array_equal(mask, batch_mask[:, :cut])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The synthetic market's days (engine.testing.make_data) with null quotes and a symbol without any."""
    from tthf.engine.data.marketdata import read_day

    root = make_data(tmp_path_factory.mktemp("market"), n_symbols=6)
    return [(day, with_null_quotes(read_day(str(root), day))) for day in DAYS]


def test_kernel_matches_the_oracle_on_the_synthetic_days(synthetic):
    for day, raw in synthetic:
        clean = clean_rows(raw, day, None, f"synthetic {day}")
        grid = DayGrid.from_clean(day, clean)
        features, mask, _ = compute_grid(grid.columns, clean.n_minutes)
        ref, ref_mask = oracle.oracle_grid(grid.columns, clean.n_minutes)
        assert np.array_equal(mask, ref_mask)
        assert not mismatches(features, ref), day
        assert not mask[-1].any(), "the symbol without quotes is masked"
        assert np.array_equal(build_day(raw, day).features, features)


def test_a_perturbed_feature_fails(synthetic):
    """The test of the test: one feature off by 1e-5 relative somewhere is caught, and named."""
    day, raw = synthetic[0]
    clean = clean_rows(raw, day, None, "x")
    grid = DayGrid.from_clean(day, clean)
    features, _, _ = compute_grid(grid.columns, clean.n_minutes)
    ref, _ = oracle.oracle_grid(grid.columns, clean.n_minutes)
    assert not mismatches(features, ref)
    for name in ("mid_vs_vwap", "rv_5", "tod_cos"):
        bad = features.copy()
        i = FEATURE_NAMES.index(name)
        s, t = np.unravel_index(np.argmax(np.abs(bad[..., i])), bad.shape[:2])
        bad[s, t, i] += 1e-5 * max(1.0, abs(float(bad[s, t, i])))
        assert list(mismatches(bad, ref)) == [name]


def test_kernel_table_is_formulas_table():
    assert _kernels.FEATURE_NAMES == FEATURE_NAMES
    assert _kernels.FEATURE_LOOKBACK == oracle.LOOKBACK


def call(g, *, names=FEATURE_NAMES, done=0, start=0, n_minutes=None, neutral=None, out=None, state=None, threads=1):
    """The binding with good arguments unless told otherwise."""
    w, n_sym = g["bid"].shape
    state = state or DayState()
    state.fit(w, n_sym)
    if out is None:
        out = np.empty((n_sym, max(0, w - start), len(FEATURE_NAMES)), dtype=np.float32)
    columns = [g[name] for name in _kernels.FEATURE_COLUMNS]
    _kernels.compute_features(
        columns,
        state.ints,
        state.floats,
        done,
        start,
        n_minutes or w,
        _NEUTRAL_VALUES if neutral is None else neutral,
        names,
        out,
        threads,
    )
    return out


def test_the_kernel_refuses_a_table_it_does_not_implement():
    g = random_grid(0, 10, 2, 1.0, 1.0)
    swapped = list(FEATURE_NAMES)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    with pytest.raises(UsageError, match=r"names 'ret_open' at column 3 .* computes 'ret_30'"):
        call(g, names=swapped)
    with pytest.raises(UsageError, match=r"names '\(none\)' at column 58"):
        call(g, names=FEATURE_NAMES[:-1])
    with pytest.raises(UsageError, match=r"names 'my_feature' at column 59"):
        call(g, names=(*FEATURE_NAMES, "my_feature"))


def test_bad_arrays_are_clear_errors():
    g = random_grid(1, 12, 3, 1.0, 1.0)
    n_f = len(FEATURE_NAMES)
    with pytest.raises(UsageError, match=r"columns\[ask\] must have dtype float64"):
        call({**g, "ask": g["ask"].astype(np.float32)})
    with pytest.raises(UsageError, match=r"columns\[volume\] must be C-contiguous"):
        call({**g, "volume": np.asfortranarray(g["volume"])})
    with pytest.raises(UsageError, match=r"columns\[close\] must have shape \(12, 3\)"):
        call({**g, "close": g["close"][:11]})
    with pytest.raises(UsageError, match=r"columns\[high\] must be 2-dimensional"):
        call({**g, "high": g["high"].ravel()})
    with pytest.raises(UsageError, match=r"out must have shape \(3, 12, 59\)"):
        call(g, out=np.empty((3, 11, n_f), dtype=np.float32))
    with pytest.raises(UsageError, match=r"out must have dtype float32"):
        call(g, out=np.empty((3, 12, n_f)))
    read_only = np.empty((3, 12, n_f), dtype=np.float32)
    read_only.flags.writeable = False
    with pytest.raises(UsageError, match=r"out is read-only"):
        call(g, out=read_only)
    with pytest.raises(UsageError, match=r"neutral must have shape \(59\)"):
        call(g, neutral=_NEUTRAL_VALUES[:5])
    with pytest.raises(UsageError, match=r"start must be in \[0, 12\]"):
        call(g, start=13)
    with pytest.raises(UsageError, match=r"done must be in \[0, 12\]"):
        call(g, done=-1)
    with pytest.raises(UsageError, match=r"threads must be >= 1"):
        call(g, threads=0)
    state = DayState()
    state.fit(5, 3)  # room for 5 minutes only
    with pytest.raises(UsageError, match=r"room for the grid's 12 minutes"):
        _kernels.compute_features(
            [g[c] for c in _kernels.FEATURE_COLUMNS], state.ints, state.floats, 0, 0, 12,
            _NEUTRAL_VALUES, FEATURE_NAMES, np.empty((3, 12, n_f), dtype=np.float32), 1,
        )  # fmt: skip


def test_a_state_the_kernel_did_not_write_is_refused():
    g = random_grid(2, 12, 2, 1.0, 1.0)
    state = DayState()
    call(g, state=state)
    state.ints[1, 7, 0] = 9  # a last quote in the future
    with pytest.raises(UsageError, match=r"state ints\[1, 7\] holds a minute outside \[-1, 7\]"):
        call(g, state=state, done=12)


def test_threads_give_the_same_bits():
    g = random_grid(3, 200, 70, 0.9, 0.8)
    assert call(g, threads=3).tobytes() == call(g, threads=1).tobytes()


def test_the_gil_is_released():
    """Two threads computing at once must overlap (GIL released inside the kernel)."""
    import threading
    import time

    g = random_grid(4, 390, 400, 0.9, 0.9)

    def busy():
        call(g)

    ticks = 0
    worker = threading.Thread(target=busy)
    worker.start()
    while worker.is_alive():
        ticks += 1  # Python runs here while the kernel works
        time.sleep(0.001)
    assert ticks >= 5, "the main thread did not run while the kernel worked"


def test_vector_and_scalar_math_agree_within_the_oracle_tolerance(tmp_path):
    """The two math paths (glibc's AVX2 libmvec, scalar libm) each match the oracle and each other."""
    import os
    import subprocess
    import sys

    g = random_grid(5, 390, 40, 0.9, 0.8)
    np.savez(tmp_path / "grid.npz", **g)
    script = (
        "import sys, numpy as np\n"
        "from tthf.engine import _kernels\n"
        "from tthf.engine.features import compute_grid\n"
        "g = dict(np.load(sys.argv[1]))\n"
        "assert not _kernels.vector_math()\n"
        "np.save(sys.argv[2], compute_grid(g, 390, labels=False)[0])\n"
    )
    env = {**os.environ, "TTHF_SCALAR_MATH": "1"}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "grid.npz"), str(tmp_path / "scalar.npy")],
        env=env,
        check=True,
        timeout=120,
    )
    scalar = np.load(tmp_path / "scalar.npy")
    here = compute_grid(g, 390, labels=False)[0]
    ref, _ = oracle.oracle_grid(g, 390)
    assert not mismatches(scalar, ref)
    assert not mismatches(here, ref)
    assert not mismatches(here, scalar)
    # the vector path is really taken where it exists: some value rounds differently
    assert (here.tobytes() != scalar.tobytes()) == _kernels.vector_math()


def _scalers_for(features: np.ndarray, clip: float = 2.0):
    """Scalers fitted on real kernel features, with a small clip so that clipping happens."""
    from tthf.engine.features.scalers import Scalers

    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    std = flat.std(axis=0)
    return Scalers(
        names=tuple(FEATURE_NAMES), mean=flat.mean(axis=0), std=np.where(std > 0, std, 1.0), clip=clip, count=len(flat)
    )


def test_the_kernel_scales_as_transform_does_bit_for_bit():
    """compute_grid(scale=...) == Scalers.transform of the unscaled grid, in the kernel's order and in others."""
    g = random_grid(7, 390, 30, 0.9, 0.8)
    unscaled, mask, _ = compute_grid(g, 390, labels=False)
    scalers = _scalers_for(unscaled)
    rng = np.random.default_rng(0)
    for order in (list(FEATURE_NAMES), list(rng.permutation(FEATURE_NAMES)), list(rng.permutation(FEATURE_NAMES))):
        want = scalers.transform(unscaled, FEATURE_NAMES, order)
        assert (np.abs(want) == scalers.clip).any(), "the case must clip"
        for start in (0, 200):
            got, got_mask, _ = compute_grid(
                g, 390, start, labels=False, scale=scalers.kernel_scale(FEATURE_NAMES, order)
            )
            assert got.shape == (30, 390 - start, len(order))
            assert got.tobytes() == want[:, start:].tobytes()
            assert np.array_equal(got_mask, mask)
    # the test can fail: another mean for one output changes bits
    cols, mean, inv, clip = scalers.kernel_scale(FEATURE_NAMES, FEATURE_NAMES)
    mean = mean.copy()
    mean[3] = np.nextafter(mean[3], np.float32(np.inf))
    got, _, _ = compute_grid(g, 390, labels=False, scale=(cols, mean, inv, clip))
    assert got.tobytes() != scalers.transform(unscaled, FEATURE_NAMES, FEATURE_NAMES).tobytes()


def test_build_scaled_day_is_transform_of_build_day(synthetic):
    from tthf.engine.features import build_scaled_day

    day, raw = synthetic[0]
    feats = build_day(raw, day)
    scalers = _scalers_for(feats.features)
    order = list(reversed(FEATURE_NAMES))
    scaled = build_scaled_day(raw, day, scalers, order)
    assert scaled.scaled.tobytes() == scalers.transform_day(feats, order).tobytes()
    assert np.array_equal(scaled.mask, feats.mask) and scaled.symbols == feats.symbols
    assert scaled.counts == feats.counts and scaled.feature_names == order


def test_a_bad_scale_is_a_clear_error():
    g = random_grid(1, 12, 3, 1.0, 1.0)
    cols = np.arange(4, dtype=np.int32)
    mean, inv = np.zeros(4, np.float32), np.ones(4, np.float32)
    cases = [
        ((cols, mean, inv), r"scale must be \(index, mean, inv_std, clip\), got 3 items"),
        ((cols.astype(np.int64), mean, inv, 5.0), r"scale index must have dtype int32"),
        ((np.array([0, 1, 59, 2], np.int32), mean, inv, 5.0), r"scale index\[2\] = 59 is not a feature index"),
        ((cols, mean[:3], inv, 5.0), r"scale mean must have shape \(4\)"),
        ((cols, mean, inv.astype(np.float64), 5.0), r"scale inv_std must have dtype float32"),
        ((cols, mean, inv, 0.0), r"scale clip must be a finite number > 0"),
        ((cols, mean, inv, float("nan")), r"scale clip must be a finite number > 0"),
    ]
    for scale, message in cases:
        with pytest.raises(UsageError, match=message):
            compute_grid(g, 12, labels=False, scale=scale)
    with pytest.raises(UsageError, match=r"out must have shape \(3, 12, 4\)"):
        compute_grid(g, 12, labels=False, scale=(cols, mean, inv, 5.0), out=np.empty((3, 12, 59), np.float32))

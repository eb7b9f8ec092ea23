"""The C++ windowing kernel against the numpy oracle (tests/window_oracle.py), and its guards."""

from __future__ import annotations

import numpy as np
import pytest
import window_oracle as oracle
from hypothesis import given, settings
from hypothesis import strategies as st

from tthf.engine import _kernels
from tthf.engine.windows import (
    count_windows,
    cut_windows,
    default_threads,
    gather_windows,
    iter_batches,
    window_positions,
)
from tthf.errors import UsageError

DTYPES = (np.float32, np.float16)
SENTINEL = 0x5A  # byte pattern of untouched output


def random_bits(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values that stress the copy and the float16 rounding: random bit patterns
    (NaN payloads, infinities, subnormals), float16 rounding ties and ordinary values."""
    n = int(np.prod(shape))
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**31, n).astype(np.uint32) & ~np.uint32(0x1FFF)) | np.uint32(0x1000)
    normal = rng.normal(0, 3, n).astype(np.float32).view(np.uint32)
    pick = rng.integers(0, 3, n)
    bits = np.where(pick == 0, bits, np.where(pick == 1, ties, normal))
    return bits.view(np.float32).reshape(shape)


@st.composite
def days(draw: st.DrawFn, max_sym: int = 6, max_min: int = 80, max_feat: int = 9):
    n_sym = draw(st.integers(0, max_sym))
    n_min = draw(st.integers(0, max_min))
    n_feat = draw(st.integers(1, max_feat))
    seq_len = draw(st.integers(1, 35))
    stride = draw(st.integers(1, 8))
    density = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((n_sym, n_min)) < density
    features = random_bits(rng, (n_sym, n_min, n_feat))
    return features, mask, seq_len, stride


def sentinel_out(capacity: int, seq_len: int, n_feat: int, dtype: type) -> np.ndarray:
    out = np.empty((capacity, seq_len, n_feat), dtype)
    out.view(np.uint8)[...] = SENTINEL
    return out


def assert_same_bytes(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    same = actual.view(np.uint8) == expected.view(np.uint8)
    assert same.all(), f"{(~same).sum()} bytes differ"


@settings(max_examples=200, deadline=None)
@given(days())
def test_positions_match_oracle(day) -> None:
    _, mask, seq_len, stride = day
    sym, minute = oracle.positions(mask, seq_len, stride)
    assert count_windows(mask, seq_len, stride) == len(sym)
    got_sym, got_minute = window_positions(mask, seq_len, stride)
    assert got_sym.dtype == np.int32 and got_minute.dtype == np.int32
    np.testing.assert_array_equal(got_sym, sym)
    np.testing.assert_array_equal(got_minute, minute)


@settings(max_examples=300, deadline=None)
@given(days(), st.sampled_from(DTYPES), st.integers(0, 40), st.data(), st.sampled_from([None, False, True]))
def test_cut_matches_oracle(day, dtype, capacity, data, nontemporal) -> None:
    features, mask, seq_len, stride = day
    sym, minute = oracle.positions(mask, seq_len, stride)
    start = data.draw(st.integers(0, len(sym)), label="start")
    out = sentinel_out(capacity, seq_len, features.shape[2], dtype)
    sym_out = np.full(capacity, -7, np.int32)
    minute_out = np.full(capacity, -7, np.int32)

    n, next_start = _kernels.cut_windows(
        features, mask, out, seq_len, stride, start, sym_out, minute_out, data.draw(st.integers(1, 3)), nontemporal
    )

    stop = min(start + capacity, len(sym))
    assert (n, next_start) == (stop - start, stop)
    np.testing.assert_array_equal(sym_out[:n], sym[start:stop])
    np.testing.assert_array_equal(minute_out[:n], minute[start:stop])
    assert_same_bytes(out[:n], oracle.windows(features, sym[start:stop], minute[start:stop], seq_len, dtype))
    assert (out[n:].view(np.uint8) == SENTINEL).all(), "wrote past the windows it returned"
    assert (sym_out[n:] == -7).all() and (minute_out[n:] == -7).all()


@settings(max_examples=100, deadline=None)
@given(days(), st.sampled_from(DTYPES), st.integers(1, 25))
def test_cursor_walk_covers_every_window_once(day, dtype, capacity) -> None:
    features, mask, seq_len, stride = day
    sym, minute = oracle.positions(mask, seq_len, stride)
    out = sentinel_out(capacity, seq_len, features.shape[2], dtype)
    got_sym, got_minute, got_windows, starts = [], [], [], []
    for batch in iter_batches(features, mask, out, seq_len=seq_len, stride=stride):
        assert 0 < len(batch.windows) <= capacity
        starts.append(batch.start)
        got_sym.append(batch.sym_idx.copy())
        got_minute.append(batch.minute_idx.copy())
        got_windows.append(batch.windows.copy())
    assert starts == list(range(0, len(sym), capacity))
    if not starts:
        assert len(sym) == 0
        return
    np.testing.assert_array_equal(np.concatenate(got_sym), sym)
    np.testing.assert_array_equal(np.concatenate(got_minute), minute)
    assert_same_bytes(np.concatenate(got_windows), oracle.windows(features, sym, minute, seq_len, dtype))


@settings(max_examples=150, deadline=None)
@given(days(), st.sampled_from(DTYPES), st.integers(0, 30), st.integers(0, 2**32 - 1), st.sampled_from([None, True]))
def test_gather_matches_oracle(day, dtype, n, seed, nontemporal) -> None:
    features, _, seq_len, _ = day
    n_sym, n_min, n_feat = features.shape
    if n_sym == 0 or n_min < seq_len:
        n = 0
    rng = np.random.default_rng(seed)
    sym = rng.integers(0, max(n_sym, 1), n).astype(np.int32)
    minute = rng.integers(seq_len - 1, max(n_min, seq_len), n).astype(np.int32)
    out = sentinel_out(n + 2, seq_len, n_feat, dtype)
    assert _kernels.gather_windows(features, sym, minute, out, seq_len, 2, nontemporal) == n
    assert_same_bytes(out[:n], oracle.windows(features, sym, minute, seq_len, dtype))
    assert (out[n:].view(np.uint8) == SENTINEL).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nontemporal", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_threaded_copy_matches_oracle(dtype, nontemporal, threads) -> None:
    # Over 12 MiB of output: the kernel starts one thread per 4 MiB (up to `threads`),
    # and the threads share it in 1 MiB chunks.
    rng = np.random.default_rng(threads)
    features = random_bits(rng, (64, 260, 16))
    mask = rng.random((64, 260)) < 0.999
    sym, minute = oracle.positions(mask, 30, 1)
    out = sentinel_out(len(sym) + 5, 30, 16, dtype)
    assert out.nbytes > 12 * 2**20
    n, _ = _kernels.cut_windows(features, mask, out, 30, 1, 0, None, None, threads, nontemporal)
    assert n == len(sym)
    assert_same_bytes(out[:n], oracle.windows(features, sym, minute, 30, dtype))
    assert (out[n:].view(np.uint8) == SENTINEL).all()


def test_public_api_defaults_match_the_contract() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 390, 59)).astype(np.float32)
    mask = np.ones((3, 390), bool)
    mask[1, 100] = False
    out = np.empty((2000, 30, 59), np.float16)
    n, next_start = cut_windows(features, mask, out)
    assert n == next_start == count_windows(mask) == 3 * 361 - 30
    sym, minute = window_positions(mask)
    np.testing.assert_array_equal(
        out[:n], features[sym[:, None], minute[:, None] + np.arange(-29, 1)].astype(np.float16)
    )
    assert 1 <= default_threads() <= 4


def test_half_conversion_is_numpys() -> None:
    # The scalar conversion (portable path and NaN lanes) on rounding ties, the
    # subnormal and overflow boundaries and every special exponent.
    rng = np.random.default_rng(1)
    exps = np.arange(0x60, 0x90, dtype=np.uint32)  # float16 subnormal .. overflow range
    mant = rng.integers(0, 2**23, (len(exps), 64)).astype(np.uint32)
    mant[:, :8] = [0, 1, 0x1000, 0x3000, 0x2000, 0x1FFF, 0x7FFFFF, 0x7FF000]
    bits = ((exps[:, None] << 23) | mant).ravel()
    bits = np.concatenate([bits, bits | 0x80000000, [0x7F800000, 0x7F800001, 0x7FC00000, 0x7FA00000, 0, 1]])
    with np.errstate(over="ignore"):
        expected = bits.astype(np.uint32).view(np.float32).astype(np.float16).view(np.uint16)
    got = np.array([_kernels.half_bits(int(b)) for b in bits], np.uint16)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shape", [(0, 390), (5, 0), (0, 0), (4, 29)])
def test_days_without_windows(shape) -> None:
    features = np.zeros((*shape, 3), np.float32)
    mask = np.ones(shape, bool)
    out = np.empty((8, 30, 3), np.float32)
    assert count_windows(mask) == 0
    assert [len(a) for a in window_positions(mask)] == [0, 0]
    assert cut_windows(features, mask, out) == (0, 0)
    assert list(iter_batches(features, mask, out)) == []
    assert gather_windows(features, [], [], out) == 0


def test_torch_tensor_out() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    features = rng.normal(size=(2, 50, 4)).astype(np.float32)
    mask = np.ones((2, 50), bool)
    sym, minute = oracle.positions(mask, 30, 1)
    for tdtype, dtype in [(torch.float32, np.float32), (torch.float16, np.float16)]:
        out = torch.zeros((64, 30, 4), dtype=tdtype)
        assert cut_windows(features, mask, out) == (42, 42)
        assert_same_bytes(out[:42].numpy(), oracle.windows(features, sym, minute, 30, dtype))
        assert not out[42:].any()
    with pytest.raises(UsageError, match="requires_grad"):
        cut_windows(features, mask, torch.zeros((64, 30, 4), requires_grad=True))
    with pytest.raises(UsageError, match="out"):
        cut_windows(features, mask, torch.zeros((64, 30, 4), dtype=torch.bfloat16))


@pytest.mark.gpu
def test_pinned_torch_out() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("pinned host memory needs CUDA")
    features = np.random.default_rng(3).normal(size=(2, 40, 3)).astype(np.float32)
    mask = np.ones((2, 40), bool)
    out = torch.empty((32, 30, 3), dtype=torch.float16, pin_memory=True)
    assert cut_windows(features, mask, out) == (22, 22)
    sym, minute = oracle.positions(mask, 30, 1)
    assert_same_bytes(out[:22].numpy(), oracle.windows(features, sym, minute, 30, np.float16))
    with pytest.raises(UsageError, match="device memory"):
        cut_windows(features, mask, out.cuda())


def test_concurrent_calls_from_python_threads() -> None:
    # The GIL is released during the copy; the per-thread scratch keeps calls apart.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4)
    features = rng.normal(size=(6, 200, 8)).astype(np.float32)
    masks = [rng.random((6, 200)) < p for p in (0.97, 0.99, 0.995, 1.0)]

    def cut(mask: np.ndarray) -> np.ndarray:
        out = np.empty((count_windows(mask), 30, 8), np.float32)
        for _ in range(20):
            cut_windows(features, mask, out, threads=1)
        return out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(cut, masks))
    for mask, out in zip(masks, results):
        sym, minute = oracle.positions(mask, 30, 1)
        assert_same_bytes(out, oracle.windows(features, sym, minute, 30, np.float32))


# --- bad inputs ---------------------------------------------------------------------

F32 = np.zeros((3, 40, 4), np.float32)
MASK = np.ones((3, 40), bool)
ALIASED = np.zeros((8, 30, 4), np.float32)


def out_f32(capacity: int = 8) -> np.ndarray:
    return np.empty((capacity, 30, 4), np.float32)


def read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def unaligned_features() -> np.ndarray:
    raw = np.zeros(F32.nbytes + 1, np.uint8)
    return np.frombuffer(raw.data, np.float32, F32.size, offset=1).reshape(F32.shape)


BAD_CUTS = [
    ("float64 features", dict(features=F32.astype(np.float64)), "features must have dtype float32"),
    ("2-D features", dict(features=F32[0]), "features must be 3-dimensional"),
    ("strided features", dict(features=np.zeros((3, 80, 4), np.float32)[:, ::2]), "features must be C-contiguous"),
    ("Fortran features", dict(features=np.asfortranarray(F32)), "features must be C-contiguous"),
    ("unaligned features", dict(features=unaligned_features()), "features is not aligned"),
    ("list features", dict(features=F32.tolist()), "features must be a numpy array"),
    ("uint8 mask", dict(mask=MASK.astype(np.uint8)), "mask must have dtype bool"),
    ("mask shape", dict(mask=np.ones((3, 41), bool)), r"mask must have shape \(symbols, minutes\) = \(3, 40\)"),
    ("1-D mask", dict(mask=np.ones(120, bool)), "mask must be 2-dimensional"),
    ("strided mask", dict(mask=np.ones((3, 80), bool)[:, ::2]), "mask must be C-contiguous"),
    ("float64 out", dict(out=np.empty((8, 30, 4))), "out must have dtype float32 or float16"),
    ("out window length", dict(out=np.empty((8, 29, 4), np.float32)), r"out must have shape \(capacity, 30, 4\)"),
    ("out features", dict(out=np.empty((8, 30, 5), np.float32)), r"out must have shape \(capacity, 30, 4\)"),
    ("2-D out", dict(out=np.empty((8, 120), np.float32)), "out must be 3-dimensional"),
    ("read-only out", dict(out=read_only(out_f32())), "out is read-only"),
    ("bytes out", dict(out=bytes(8 * 30 * 4 * 4)), "out is read-only"),
    ("strided out", dict(out=np.empty((16, 30, 4), np.float32)[::2]), "out must be C-contiguous"),
    (
        "out aliases features",
        dict(features=ALIASED, mask=np.ones((8, 30), bool), out=ALIASED),
        "out and features share memory",
    ),
    ("short sym_out", dict(sym_out=np.empty(7, np.int32), minute_out=np.empty(8, np.int32)), "sym_out holds 7 entries"),
    (
        "int64 minute_out",
        dict(sym_out=np.empty(8, np.int32), minute_out=np.empty(8, np.int64)),
        "minute_out must have dtype int32",
    ),
    (
        "read-only sym_out",
        dict(sym_out=read_only(np.empty(8, np.int32)), minute_out=np.empty(8, np.int32)),
        "sym_out is read-only",
    ),
    ("only sym_out", dict(sym_out=np.empty(8, np.int32)), "both sym_out and minute_out"),
    ("seq_len 0", dict(seq_len=0, out=np.empty((8, 0, 4), np.float32)), r"seq_len must be in \[1, 2\*\*31-1\]"),
    ("stride 0", dict(stride=0), r"stride must be in \[1, 2\*\*31-1\]"),
    ("huge stride", dict(stride=2**40), r"stride must be in \[1, 2\*\*31-1\] \(1 = every minute\), got 1099511627776"),
    ("start beyond 64 bits", dict(start=2**70), "start must fit in 64 bits"),
    ("negative start", dict(start=-1), "start must be >= 0"),
    ("start past the end", dict(start=34), "start=34 is past the end of the day's 33 windows"),
    ("float start", dict(start=1.5), "start must be an integer"),
    ("threads 0", dict(threads=0), "threads must be >= 1"),
]


@pytest.mark.parametrize("case", BAD_CUTS, ids=[c[0] for c in BAD_CUTS])
def test_bad_cut_arguments_raise_clear_errors(case) -> None:
    _, override, message = case
    args = dict(features=F32, mask=MASK, out=out_f32())
    args.update(override)
    features, mask, out = args.pop("features"), args.pop("mask"), args.pop("out")
    with pytest.raises(UsageError, match=message):
        cut_windows(features, mask, out, **args)


def test_start_at_the_end_is_fine() -> None:
    assert cut_windows(F32, MASK, out_f32(), start=33) == (0, 33)


def test_bad_gather_arguments_raise_clear_errors() -> None:
    idx = np.array([0, 2], np.int32)
    with pytest.raises(UsageError, match=r"window 1 \(sym_idx=3, minute_idx=29\) is out of bounds"):
        gather_windows(F32, [0, 3], [29, 29], out_f32())
    with pytest.raises(UsageError, match=r"minute_idx \(the window's last minute\) in \[29, 40\)"):
        gather_windows(F32, idx, [29, 28], out_f32())
    with pytest.raises(UsageError, match="out of bounds"):
        gather_windows(F32, idx, [29, 40], out_f32())
    with pytest.raises(UsageError, match="out of bounds"):
        gather_windows(F32, [-1, 0], [29, 29], out_f32())
    with pytest.raises(UsageError, match="same length"):
        gather_windows(F32, idx, [29], out_f32())
    with pytest.raises(UsageError, match=r"out holds 1 windows but 2 were asked for"):
        gather_windows(F32, idx, [29, 30], out_f32(1))
    with pytest.raises(UsageError, match="integer array"):
        gather_windows(F32, [0.0, 1.0], [29, 30], out_f32())
    with pytest.raises(UsageError, match="outside int32"):
        gather_windows(F32, [0, 2**40], [29, 30], out_f32())
    with pytest.raises(UsageError, match="out is read-only"):
        gather_windows(F32, idx, [29, 30], read_only(out_f32()))
    out = out_f32()
    out[...] = 7
    with pytest.raises(UsageError):
        gather_windows(F32, [0, 1, 5], [29, 30, 31], out)
    assert (out == 7).all(), "nothing is written when a position is out of bounds"


def test_bad_mask_for_counting() -> None:
    with pytest.raises(UsageError, match="mask must have dtype bool"):
        count_windows(np.ones((2, 40), np.int8))
    with pytest.raises(UsageError, match="stride must be in"):
        window_positions(MASK, 30, 0)

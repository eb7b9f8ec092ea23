"""Output bandwidth of the windowing kernel beside memcpy and numpy, measured in one run.

    python -m pytest bench/bench_windows.py --benchmark-only

For one synthetic day (TTHF_BENCH_SYMBOLS symbols, default 1000, x 390 minutes x 59
features, dense stride 1) and each output dtype, it times cutting the day's windows
into a batch of 4096 windows (the runner's case) and into one buffer holding the
whole day, with:

- ``kernel``: tthf.engine.windows.cut_windows, default threads;
- ``kernel-1t``: the same on one thread;
- ``memcpy``: np.copyto of the same number of bytes from a separate buffer into the
  same output (the bandwidth ceiling);
- ``numpy``: sliding_window_view, fancy indexing of the windows, copy (and cast) into
  the output: the pure-numpy windowing the kernel replaces.

Every benchmark records the bytes it writes (extra_info) and checks the first and
last window it cut; at the end the module prints output GB/s (best round) and the
kernel's ratios to memcpy and numpy per case. With --benchmark-disable (smoke run)
every body runs once, checks included.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from tthf.engine.windows import count_windows, cut_windows, default_threads, window_positions

SEQ_LEN = 30
N_MIN, N_FEAT = 390, 59
BATCH = 4096
METHODS = ("kernel", "kernel-1t", "memcpy", "numpy")
CASES = ("batch4096", "whole-day")
DTYPES = {"float32": np.float32, "float16": np.float16}

_results: dict[tuple[str, str], dict[str, float]] = {}  # (case, dtype) -> method -> bytes/s


@pytest.fixture(scope="module")
def day() -> tuple[np.ndarray, np.ndarray]:
    n_sym = int(os.environ.get("TTHF_BENCH_SYMBOLS", "1000"))
    rng = np.random.default_rng(0)
    features = rng.standard_normal((n_sym, N_MIN, N_FEAT), dtype=np.float32)
    mask = np.ones((n_sym, N_MIN), bool)
    mask[::20, :45] = False  # every 20th symbol starts late
    mask[7::50, 200:203] = False  # and some have a short gap
    return features, mask


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not _results:
        return
    lines = [
        "",
        f"windowing output bandwidth, GB/s (best round); threads: default={default_threads()}",
        f"{'case':<11} {'dtype':<8} " + " ".join(f"{m:>10}" for m in METHODS) + "  kernel/memcpy  kernel/numpy",
    ]
    for (case, dtype), bw in sorted(_results.items()):
        cells = " ".join(f"{bw[m] / 1e9:>10.1f}" if m in bw else f"{'-':>10}" for m in METHODS)
        ratios = ""
        if {"kernel", "memcpy", "numpy"} <= bw.keys():
            ratios = f"  {bw['kernel'] / bw['memcpy']:>13.2f}  {bw['kernel'] / bw['numpy']:>12.1f}"
        lines.append(f"{case:<11} {dtype:<8} {cells}{ratios}")
    # Fixture teardown runs under output capture: print past it.
    plugins = request.config.pluginmanager
    capture, reporter = plugins.get_plugin("capturemanager"), plugins.get_plugin("terminalreporter")
    if capture is None or reporter is None:  # -p no:capture / no:terminal: nowhere to print past the capture
        return
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


def runner(method: str, features: np.ndarray, mask: np.ndarray, out: np.ndarray, start: int) -> Callable[[], None]:
    n = len(out)
    if method in ("kernel", "kernel-1t"):
        threads = 1 if method == "kernel-1t" else None

        def run() -> None:
            assert cut_windows(features, mask, out, start=start, threads=threads)[0] == n

        return run
    if method == "memcpy":
        src = np.full(out.nbytes, 3, np.uint8)
        dst = out.reshape(-1).view(np.uint8)
        return lambda: np.copyto(dst, src)
    sym, minute = window_positions(mask)
    sym, first = sym[start : start + n], minute[start : start + n] - (SEQ_LEN - 1)
    view = sliding_window_view(features, SEQ_LEN, axis=1)  # (S, M-L+1, F, L)

    def run_numpy() -> None:
        np.copyto(out, view[sym, first].transpose(0, 2, 1), casting="same_kind")

    return run_numpy


def check_windows(features: np.ndarray, mask: np.ndarray, out: np.ndarray, start: int) -> None:
    """The first and last window of out are the right minutes, converted like numpy does."""
    sym, minute = window_positions(mask)
    for i in (0, len(out) - 1):
        s, t = sym[start + i], minute[start + i]
        expected = features[s, t - SEQ_LEN + 1 : t + 1].astype(out.dtype)
        assert out[i].tobytes() == expected.tobytes(), f"window {start + i} differs"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_window_bandwidth(benchmark, day, case: str, dtype: str, method: str) -> None:
    features, mask = day
    total = count_windows(mask)
    if case == "batch4096":
        n, start, rounds = min(BATCH, total), total // 2, 30
    else:
        n, start, rounds = total, 0, 3
    out = np.empty((n, SEQ_LEN, N_FEAT), DTYPES[dtype])
    run = runner(method, features, mask, out, start)
    benchmark.group = f"{case} {dtype}"
    benchmark.extra_info.update(bytes=out.nbytes, windows=n, shape=list(features.shape))
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    if method != "memcpy":
        check_windows(features, mask, out, start)
    if not benchmark.enabled:  # --benchmark-disable: a smoke run, nothing timed
        return
    best = benchmark.stats.stats.min
    benchmark.extra_info["GBps"] = out.nbytes / best / 1e9
    _results.setdefault((case, dtype), {})[method] = out.nbytes / best

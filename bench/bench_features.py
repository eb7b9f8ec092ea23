"""Features of one market day: tthf's ``build_day`` (polars cleaning, the C++ features kernel) against the pandas baseline.

Both start from the same raw frame in memory (reading Parquet is the end-to-end
benchmark's business) and must produce the same features and mask (asserted, with the
tolerance of baseline/parity.py). Throughput is raw rows per second; ``core_seconds``
(extra info) is the process's user + system CPU time per day, every thread included,
which is what a host running several dates at once pays.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

import pytest
from baseline import build_features
from baseline.parity import compare

from tthf.engine.data.marketdata import read_day
from tthf.engine.features import build_day


@pytest.fixture(scope="module")
def raw_day(market):
    day = market.dates[-1]
    raw = read_day(str(market.root), day)
    return day, raw, raw.to_pandas()


@pytest.fixture(scope="module")
def outputs() -> dict:
    return {}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CoreSeconds:
    """``fn`` wrapped to add up the user + system seconds of its calls."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn, self.total, self.calls = fn, 0.0, 0

    def __call__(self) -> object:
        before = _cpu_seconds()
        out = self.fn()
        self.total += _cpu_seconds() - before
        self.calls += 1
        return out


@pytest.mark.parametrize("variant", ["tthf", "baseline-pandas"])
def test_features(benchmark, sizes, raw_day, outputs, variant: str) -> None:
    day, raw, raw_pd = raw_day
    fn: Callable[[], object]
    if variant == "tthf":
        fn = lambda: build_day(raw, day)
    else:
        fn = lambda: build_features(raw_pd, day)
    benchmark.group = "features"
    benchmark.extra_info.update(
        section="features", variant=variant, units=raw.height, unit="rows", symbols=sizes.symbols
    )
    timed = CoreSeconds(fn)
    outputs[variant] = benchmark.pedantic(timed, rounds=sizes.rounds, warmup_rounds=0 if sizes.smoke else 1)
    benchmark.extra_info["core_seconds"] = timed.total / timed.calls
    if len(outputs) == 2:
        tthf = outputs["tthf"]
        symbols, frame, mask = outputs["baseline-pandas"]
        parity = compare(tthf.features, tthf.mask, tthf.symbols, tthf.feature_names, symbols, frame, mask)
        benchmark.extra_info.update(max_rel_err=parity.worst[1], worst_feature=parity.worst[0])
        assert parity.ok, (
            f"baseline and tthf features differ: {parity.beyond_tolerance()}, mask equal {parity.mask_equal}"
        )

"""Real-time latency: all symbols at one minute, from the new minute's raw bars to predictions.

Through ``tthf.engine.runtime.realtime.RealtimePredictor`` (backend ``auto``), on one market day
replayed minute by minute. The predictor rebuilds the day's features from its history at
every minute, so latency grows through the day; the timed stretch is the session's last
``TIMED`` minutes (the longest history: the worst case), after one catch-up update with
every earlier minute. Each round is one ``update`` with one minute of bars for every
symbol, closing that minute; p50/p95/p99 of those rounds go into extra_info with the predictor's own per-stage
seconds. The last minute's predictions must equal the batch path's for that minute.

Cases: the default model with ``auto``, and the production-size model at each CPU precision
(``openvino`` fp32, ``openvino-bf16``, ``openvino-int8``; a precision the CPU has no instruction
for is skipped, and report.py writes its row as "not run" with the reason).
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest
from benchlib import CPU_PRECISIONS, NATIVE, day_windows, served_anyway

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data.calendar import session_minutes
from tthf.engine.data.marketdata import read_day
from tthf.engine.windows import gather_windows

realtime = pytest.importorskip("tthf.engine.runtime.realtime", reason="engine/runtime/realtime.py is not there")


CASES = [("default", "auto", ""), *(("production", backend, p) for p, backend in sorted(CPU_PRECISIONS.items()))]


@pytest.mark.parametrize(("model", "backend", "precision"), CASES, ids=[f"{m}-{p or b}" for m, b, p in CASES])
def test_realtime_latency(benchmark, request, sizes, market, model: str, backend: str, precision: str) -> None:
    if precision and not NATIVE[precision]():
        pytest.skip(f"this CPU has no native {precision} instruction (report.py writes the row)")
    bench_run = request.getfixturevalue("bench_run" if model == "default" else "production_run")
    with served_anyway(bench_run.run, backend) as verdict:
        predictor = realtime.RealtimePredictor.from_run(bench_run.store, bench_run.run.ref.run_id, backend=backend)
    _measure(benchmark, sizes, market, bench_run, predictor)
    benchmark.extra_info.update(model=model, precision=predictor.backend.precision, export_verdict=verdict)


def _measure(benchmark, sizes, market, bench_run, predictor) -> None:
    timed = 5 if sizes.smoke else 40
    day = market.dates[-1]
    raw = read_day(str(market.root), day).sort("ts")
    minutes = raw.get_column("ts").unique().sort()
    session = pl.Series(session_minutes(day)).dt.replace_time_zone("UTC")
    predictor.reset(day)
    first_timed = session[len(session) - timed]
    predictor.update(raw.filter(pl.col("ts") < first_timed), close=session[len(session) - timed - 1])
    queue = [raw.filter(pl.col("ts") == m) for m in minutes if m >= first_timed and m <= session[-1]]
    latencies: list[float] = []
    stages: list[dict[str, float]] = []
    last: list[pl.DataFrame] = []

    def setup():
        return (queue.pop(0),), {}

    def step(bars: pl.DataFrame) -> None:
        t0 = time.perf_counter()
        last[:] = [predictor.update(bars, close=bars.get_column("ts").max()).predictions]
        latencies.append(time.perf_counter() - t0)
        stages.append(dict(predictor.seconds))

    rounds = len(queue)
    benchmark.pedantic(step, setup=setup, rounds=rounds, warmup_rounds=0, iterations=1)
    while queue:  # with --benchmark-disable, pedantic runs one round only
        step(*setup()[0])
    lat = np.array(latencies) * 1e3
    benchmark.group = "realtime"
    benchmark.extra_info.update(
        section="realtime",
        variant=f"RealtimePredictor ({predictor.backend.name})",
        units=sizes.symbols,
        unit="symbols",
        rounds=len(lat),
        p50_ms=float(np.percentile(lat, 50)),
        p95_ms=float(np.percentile(lat, 95)),
        p99_ms=float(np.percentile(lat, 99)),
        max_ms=float(lat.max()),
        stage_ms_median={k: float(np.median([s[k] for s in stages]) * 1e3) for k in stages[0]},
    )
    # the batch path for the last minute: same rows, same predictions
    scaled, mask = day_windows(market, bench_run)
    t = len(session) - 1
    valid = np.flatnonzero(mask[:, t - 29 : t + 1].all(axis=1)).astype(np.int32)
    out = np.empty((len(valid), 30, scaled.shape[2]), np.float32)
    gather_windows(scaled, valid, np.full(len(valid), t, np.int32), out)
    expected = predictor.backend.predict(out)
    got = last[0]
    assert got.height == len(valid)
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(got.get_column(name).to_numpy(), expected[name], rtol=1e-5, atol=1e-6)

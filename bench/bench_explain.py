"""``tthf-eval --explain``'s cost: seconds per evaluated date at the default sampling.

The section (``explain_dates``) on the session's market and run (``TTHF_BENCH_SYMBOLS``
symbols, default 1000, ``TTHF_BENCH_DATES`` dates; the default model, exported, through
the backend tthf-run would pick): sample each date (every 10th forecast minute, every
symbol), run the model once unpermuted and once per feature, family and lag (95 passes
with the built-in features), score each pass. Smoke mode runs one date at every 60th minute.

results.json: one benchmark in section ``explain`` whose extra_info has ``seconds_per_date``,
``windows_per_date``, ``passes`` and ``backend``.
"""

from __future__ import annotations

import time

from tthf.engine.explain.importance import items
from tthf.engine.explain.samples import Sampling
from tthf.engine.explain.section import explain_dates
from tthf.engine.store import open_store


def test_explain_seconds_per_date(benchmark, sizes, market, bench_run) -> None:
    run = bench_run.run
    dates = [d.isoformat() for d in market.dates[: 1 if sizes.smoke else None]]
    sampling = Sampling(minute_step=60) if sizes.smoke else Sampling()
    data = open_store(str(market.root))
    out: dict = {}

    def explain() -> None:
        t0 = time.perf_counter()
        out.update(explain_dates(run, data, dates, sampling))
        out["wall"] = time.perf_counter() - t0

    benchmark.pedantic(explain, rounds=1, warmup_rounds=0)
    passes = len(items(run.config.feature_names, run.config.model.seq_len)) + 1
    assert [r["name"] for r in out["lag"]] == [str(j) for j in range(run.config.model.seq_len)]
    assert out["attention"]["available"] and all(w > 0 for w in out["sampling"]["windows_per_date"])
    benchmark.group = "explain"
    benchmark.extra_info.update(
        section="explain",
        variant="default",
        units=len(dates),
        unit="dates",
        symbols=sizes.symbols,
        sampling=sampling.describe(),
        seconds_per_date=out["wall"] / len(dates),
        windows_per_date=out["sampling"]["windows_per_date"],
        passes=passes,
        backend=out["backend"],
    )

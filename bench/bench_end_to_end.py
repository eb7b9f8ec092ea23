"""End to end on the same dates: ``tthf-run --dense`` against the baseline pipeline.

From the Parquet partitions on disk to one predictions CSV per date. tthf runs as
``tthf-run`` does (its library function ``run_inference``, backend ``auto``: the fastest
available here, ONNX Runtime on a CPU host), one process; the baseline forks one process
per date (at most one per core). Both are timed whole, pool start included, and write the
same rows; the predictions must agree (tests/test_baseline.py checks this on a tiny run;
here at least 99.9% of rows within rtol 1e-3 / atol 1e-5: the features differ only by
rounding order, baseline/parity.py). Per-stage seconds go into extra_info.

``test_end_to_end_precision``: the same ``tthf-run --dense`` with the production-size model
at each CPU precision (``openvino`` fp32, ``openvino-bf16``, ``openvino-int8``) on the last
date (a production-size fp32 date of 1000 symbols is minutes on 2 cores), each into its own
prediction set (``--predictions fp32|bf16|int8``: a set holds one precision), in interleaved
rounds (``benchlib.interleaved_round``, ``Sizes.rounds`` of them: 3, 1 in smoke mode): each round
runs every precision back to back, so a load spike on the shared machine falls on one round of
all of them and not on one precision's only run (run one after another, int8 / fp32 once read
4.57x where interleaved rounds gave 2.03x). One benchmark entry; its extra_info holds every
round (``rounds``: the load average at its start and end, and each precision's windows, wall
seconds, backend and stage seconds) and ``export_verdicts``; report.py writes a row per
precision from its best round, the rounds, and the ratio to fp32 per round (lowest..highest)
beside best against best. ``bench/precision_rounds.py`` runs the same rounds from the command
line. A precision the CPU has no instruction for is not run here, and report.py writes its row
as "not run" with the reason (from the machine's ``cpu_peaks``); a variant export rejected is
served anyway (the bench measures speed; its accuracy is in the inference section), with the
export's verdict recorded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from baseline import run_baseline
from benchlib import (
    CPU_PRECISIONS,
    NATIVE,
    dense_precision_jobs,
    dense_run,
    interleaved_round,
    served_anyway_all,
)

from tthf.engine.runtime.options import RunOptions

_done: dict[str, dict[str, pd.DataFrame]] = {}


@pytest.mark.parametrize("variant", ["tthf-run-dense", "baseline"])
def test_end_to_end(benchmark, sizes, market, bench_run, tmp_path, variant: str) -> None:
    dates = market.dates
    spec = ",".join(d.isoformat() for d in dates)
    if variant == "tthf-run-dense":
        options = RunOptions(dates=spec, dense=True, backend="auto", overwrite=True)

        def run() -> tuple[int, dict]:
            return dense_run(bench_run.store, bench_run.run.ref.run_id, options)

        files = {d: bench_run.path / "inference" / f"{d.isoformat()}.csv" for d in dates}
    else:

        def run() -> tuple[int, dict]:
            results = run_baseline(bench_run.path, market.root, dates, tmp_path / "baseline")
            stages = {k: sum(r.seconds[k] for r in results) for k in results[0].seconds}
            return sum(r.windows for r in results), {"backend": "torch eager fp32 (forked pool)", "stages": stages}

        files = {d: tmp_path / "baseline" / f"{d.isoformat()}.csv" for d in dates}
    # one round: a round is minutes long at full size, and pool start and first calls are part of the job
    windows, info = benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    benchmark.group = "end to end"
    benchmark.extra_info.update(
        section="end_to_end",
        variant=variant,
        units=windows,
        unit="windows",
        dates=len(dates),
        symbols=sizes.symbols,
        **info,
    )
    _done[variant] = {d.isoformat(): pd.read_csv(p) for d, p in files.items()}
    if len(_done) == 2:
        agree = []
        for day, ours in _done["tthf-run-dense"].items():
            base = _done["baseline"][day]
            assert len(base) == len(ours)
            assert (base[["ts", "symbol"]].to_numpy() == ours[["ts", "symbol"]].to_numpy()).all()
            close = np.ones(len(ours), bool)
            for name in ("ret_1h", "vol_10m", "ret_conf", "vol_conf"):
                close &= np.isclose(base[name], ours[name], rtol=1e-3, atol=1e-5)
            agree.append(close)
        share = float(np.concatenate(agree).mean())
        benchmark.extra_info["rows_agreeing"] = share
        assert share >= 0.999, f"only {share:.1%} of rows agree between tthf and the baseline"


def test_end_to_end_precision(benchmark, sizes, market, production_run) -> None:
    native = [p for p in CPU_PRECISIONS if NATIVE[p]()]  # report.py writes the others' rows as "not run"
    run_id = production_run.run.ref.run_id
    jobs = dense_precision_jobs(production_run.store, run_id, market.dates[-1].isoformat(), native)
    rounds: list[dict] = []
    with served_anyway_all(production_run.run, {p: CPU_PRECISIONS[p] for p in native}) as verdicts:
        benchmark.pedantic(lambda: rounds.append(interleaved_round(jobs)), rounds=sizes.rounds, warmup_rounds=0)
    assert len(rounds) == sizes.rounds and all(r["runs"].keys() == set(native) for r in rounds)
    benchmark.group = "end to end"
    benchmark.extra_info.update(
        section="end_to_end",
        variant="tthf-run-dense-production",
        model="production",
        interleaved=True,
        rounds=rounds,
        export_verdicts=verdicts,
        units=sum(run["windows"] for run in rounds[0]["runs"].values()),  # one round of every precision
        unit="windows",
        dates=1,
        symbols=sizes.symbols,
    )

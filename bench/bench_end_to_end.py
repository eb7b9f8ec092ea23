"""End to end on the same dates: ``tthf-run --dense`` against the baseline pipeline.

From the Parquet partitions on disk to one predictions CSV per date. tthf runs as
``tthf-run`` does (its library function ``run_inference``, backend ``auto``: the fastest
available here, ONNX Runtime on a CPU host), one process; the baseline forks one process
per date (at most one per core). Both are timed whole, pool start included, and write the
same rows; the predictions must agree (tests/test_baseline.py checks this on a tiny run;
here at least 99.9% of rows within rtol 1e-3 / atol 1e-5: the features differ only by
rounding order, baseline/parity.py). Per-stage seconds go into extra_info.

``test_end_to_end_precision``: the same ``tthf-run --dense`` with the production-size model,
once per CPU precision (``openvino`` fp32, ``openvino-bf16``, ``openvino-int8``) on the last
date (a production-size fp32 date of 1000 symbols is minutes on 2 cores), each into its
own prediction set (``--predictions fp32|bf16|int8``: a set holds one precision). A precision
the CPU has no instruction for is skipped here, and report.py writes its row as "not run" with
the reason (from the machine's ``cpu_peaks``); a variant export rejected is served anyway
(the bench measures speed; its accuracy is in the inference section), with the export's verdict
recorded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from baseline import run_baseline
from benchlib import CPU_PRECISIONS, NATIVE, served_anyway

from tthf.engine.runs import open_run
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions

_done: dict[str, dict[str, pd.DataFrame]] = {}


@pytest.mark.parametrize("variant", ["tthf-run-dense", "baseline"])
def test_end_to_end(benchmark, sizes, market, bench_run, tmp_path, variant: str) -> None:
    dates = market.dates
    spec = ",".join(d.isoformat() for d in dates)
    if variant == "tthf-run-dense":
        options = RunOptions(dates=spec, dense=True, backend="auto", overwrite=True)

        def run() -> tuple[int, dict]:
            summary = run_inference(open_run(bench_run.store, bench_run.run.ref.run_id), options)
            assert summary.exit_code == 0 and summary.windows > 0
            stages: dict[str, float] = {}
            for result in summary.results:
                for k, v in result.seconds.items():
                    stages[k] = stages.get(k, 0.0) + v
            return summary.windows, {"backend": summary.backend, "stages": stages}

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


@pytest.mark.parametrize("precision", sorted(CPU_PRECISIONS))
def test_end_to_end_precision(benchmark, sizes, market, production_run, precision: str) -> None:
    if not NATIVE[precision]():
        pytest.skip(f"this CPU has no native {precision} instruction (report.py writes the row)")
    backend = CPU_PRECISIONS[precision]
    spec = market.dates[-1].isoformat()
    options = RunOptions(dates=spec, dense=True, backend=backend, overwrite=True, predictions=precision)

    def once() -> tuple[int, dict]:
        summary = run_inference(open_run(production_run.store, production_run.run.ref.run_id), options)
        assert summary.exit_code == 0 and summary.windows > 0 and summary.precision == precision
        stages: dict[str, float] = {}
        for result in summary.results:
            for k, v in result.seconds.items():
                stages[k] = stages.get(k, 0.0) + v
        return summary.windows, {"backend": summary.backend, "stages": stages}

    with served_anyway(production_run.run, backend) as verdict:
        windows, info = benchmark.pedantic(once, rounds=1, warmup_rounds=0)
    benchmark.group = "end to end"
    benchmark.extra_info.update(
        section="end_to_end",
        variant=f"tthf-run-dense-production-{precision}",
        model="production",
        precision=precision,
        export_verdict=verdict,
        units=windows,
        unit="windows",
        dates=1,
        symbols=sizes.symbols,
        **info,
    )

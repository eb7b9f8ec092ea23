"""Host-side dates per second (read + features + scaling, no predict) with 1 and 2 host workers.

What ``tthf-run --host-workers N`` feeds its predict stage: N = 1 runs the read and
features stages one date at a time in this process; N = 2 runs two dates at once, in two
threads of this process (``--host-mode threads``, the default) or in two spawned worker
processes with one share of the cores each (``--host-mode processes``). The three run
alternately, ``rounds`` times each, on ``TTHF_BENCH_HOST_DATES`` synthetic days (default
4; 2 in smoke mode) of the session's symbol count; the process pool is started and warmed
before the timed rounds (its start is recorded as ``pool_start_s``). Every round's scaled
grids must be identical between the three (bit for bit).

results.json: one benchmark in section ``host_stages`` whose extra_info has
``workers`` ({"1": dates/s, "2": dates/s} for the default threads, medians over the
rounds), ``processes`` ({"2": dates/s}), ``scaling`` (2-thread over 1-worker dates/s),
``scaling_processes``, ``core_seconds_per_day`` (user + sys of this process and of the
workers, per day, with 1 worker) and ``core_seconds_per_day_by_workers``.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from tthf.engine.runtime.day import DayHost
from tthf.engine.runtime.host_workers import HostPool
from tthf.engine.runtime.options import RunOptions
from tthf.engine.runtime.plan import plan_inference
from tthf.engine.runtime.stages import Item, Pipeline

#: the variants, alternated: one date at a time, 2 threads, 2 worker processes
VARIANTS = ("1", "2", "2-processes")


@pytest.fixture(scope="module")
def host_market(sizes, tmp_path_factory: pytest.TempPathFactory):
    """K days of the session's symbol count (the shared market has only TTHF_BENCH_DATES)."""
    import datetime as dt

    from tthf.engine.data.marketdata import write_day
    from tthf.engine.data.synth import SynthConfig, generate_day

    k = 2 if sizes.smoke else int(os.environ.get("TTHF_BENCH_HOST_DATES", "4"))
    cfg = SynthConfig(n_symbols=sizes.symbols, start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 29), seed=11)
    root = tmp_path_factory.mktemp("host_market")
    days = cfg.days[:k]
    for day in days:
        write_day(str(root), day, generate_day(cfg, day))
    return root, days


def _cpu() -> float:
    """Core-seconds (user + sys) so far of this process and of its live children (the pool's workers)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total, tick = usage.ru_utime + usage.ru_stime, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:  # the process has exited
            continue
        if int(fields[1]) == os.getpid():  # its parent: fields 2 (ppid), 12 and 13 (utime, stime) of proc(5)
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _round(pipeline: Pipeline, days: list) -> tuple[float, float, list[Item]]:
    """Wall seconds, core-seconds (this process + the workers') and the items of one pass over ``days``."""
    cpu, t0 = _cpu(), time.perf_counter()
    items = list(pipeline.run(days))
    wall = time.perf_counter() - t0
    assert all(i.error is None for i in items), [i.error for i in items]
    return wall, _cpu() - cpu, items


def test_host_stages(benchmark, sizes, host_market, bench_run) -> None:
    root, days = host_market
    options = RunOptions(dates=f"{days[0]}:{days[-1]}", dense=True, backend="torch", data_root=str(root))
    plan = plan_inference(bench_run.run, options)
    host = DayHost(plan.run, plan.data)
    t0 = time.perf_counter()
    pool = HostPool(plan.worker_spec(), 2)
    pipelines = {
        "1": Pipeline(host.stages()),
        "2": Pipeline(host.stages(), workers={"read": 2, "features": 2}),
        "2-processes": Pipeline(pool.stages(), workers={"host": 2}),
    }
    walls: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cores: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        _round(pipelines["2-processes"], days[:2])  # start both workers
        pool_start = time.perf_counter() - t0

        def alternate() -> None:
            for _ in range(sizes.rounds):
                grids = {}
                for name in VARIANTS:
                    wall, cpu, items = _round(pipelines[name], days)
                    walls[name].append(wall)
                    cores[name].append(cpu / len(days))
                    grids[name] = [i.payload.features.scaled for i in items]
                for name in ("2", "2-processes"):
                    assert all(np.array_equal(a, b) for a, b in zip(grids["1"], grids[name], strict=True))

        benchmark.pedantic(alternate, rounds=1, warmup_rounds=0)
    finally:
        pool.close()
    rate = {name: len(days) / statistics.median(walls[name]) for name in VARIANTS}
    benchmark.group = "host stages"
    benchmark.extra_info.update(
        section="host_stages",
        units=len(days) * sizes.rounds * len(VARIANTS),
        unit="dates",
        dates=len(days),
        symbols=sizes.symbols,
        rounds=sizes.rounds,
        workers={"1": rate["1"], "2": rate["2"]},
        processes={"2": rate["2-processes"]},
        scaling=rate["2"] / rate["1"],
        scaling_processes=rate["2-processes"] / rate["1"],
        core_seconds_per_day=statistics.median(cores["1"]),
        core_seconds_per_day_by_workers={n: statistics.median(cores[n]) for n in ("1", "2")},
        core_seconds_per_day_processes={"2": statistics.median(cores["2-processes"])},
        wall_seconds=walls,
        pool_start_s=pool_start,
        load_average=list(os.getloadavg()),
    )

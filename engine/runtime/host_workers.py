"""``--host-mode processes``: the host side of dates (read and features) in worker processes.

``--host-workers N`` runs the host side of N dates at once: in threads of this process by
default (the features kernel and polars release the GIL), or, for hosts where something in
the host side holds the GIL, in the N processes of a ``HostPool`` (docs/running.md has the
measurement of both). The pool starts its processes once per run (spawn: never a fork of a
process whose torch / ONNX Runtime / polars threads are running); each opens the run (its
scalers, feature names and calendar; never the backend) and the data root from the plan's
``WorkerSpec`` into a ``DayHost``, and returns each date as the ``Day`` the features stage
makes (the scaled ``(S, M, F)`` float32 grid, its mask, symbols, minutes and cleaning
counts), pickled through the pool's pipe, with its read and features seconds. Errors keep
their type and message (``tthf.errors`` pickle by their message), so a bad date is still
recorded as failed with its reason.

Each worker gets its own share of the CPUs this process may use (its affinity), so the
per-day threads that size themselves from the affinity (polars' pool) use that share and
N workers never oversubscribe the cores.
"""

from __future__ import annotations

import datetime as dt
import itertools
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from tthf.engine.runtime.day import DayHost
from tthf.engine.runtime.plan import WorkerSpec
from tthf.engine.runtime.stages import Measured, Stage

__all__ = ["HostPool", "cpu_shares"]


def cpu_shares(cores: Sequence[int], workers: int) -> list[set[int]]:
    """Each worker's CPUs: contiguous, disjoint shares while there are enough, else one each, round robin."""
    cores = sorted(cores)
    if workers >= len(cores):
        return [{cores[k % len(cores)]} for k in range(workers)]
    edges = np.linspace(0, len(cores), workers + 1).astype(int)
    return [set(cores[a:b]) for a, b in itertools.pairwise(edges)]


#: the worker process's host side, set once by ``_init``
_WORKER: dict[str, DayHost] = {}


def _init(spec: WorkerSpec, shares: list[set[int]], counter: Any) -> None:
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.sched_setaffinity(0, shares[index % len(shares)])
    _WORKER["host"] = DayHost(spec.run.open(), spec.data.open())


def _host_day(date: dt.date) -> Measured:
    host = _WORKER["host"]
    t0 = time.perf_counter()
    day = host.read(date)
    t1 = time.perf_counter()
    return Measured(host.features(day), {"read": t1 - t0, "features": time.perf_counter() - t1}, rest="transfer")


class HostPool:
    """``workers`` processes that each compute whole dates' host sides; ``day`` blocks for one."""

    def __init__(self, spec: WorkerSpec, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a host pool needs at least one worker, got {workers}")
        ctx = mp.get_context("spawn")
        shares = cpu_shares(sorted(os.sched_getaffinity(0)), workers)
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init, initargs=(spec, shares, ctx.Value("i", 0))
        )

    def day(self, date: dt.date) -> Measured:
        """The date's host side, computed and timed by the next free worker (its errors re-raised here)."""
        return self._pool.submit(_host_day, date).result()

    def stages(self) -> list[Stage]:
        """read and features as one stage, ``host``, on the workers.

        A date's seconds then hold its read and features, as the worker timed them, and
        ``transfer``: the rest of the stage, the date to a worker and its scaled grid back.
        """
        return [("host", lambda date, _: self.day(date))]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> HostPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

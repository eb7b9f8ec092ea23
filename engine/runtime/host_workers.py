"""The host side of a date (read the raw bars, build and scale its features), and its worker processes.

``read_raw`` and ``scale_raw`` are the read and features stages; ``--host-workers N`` runs
them for N dates at once in threads (the default: the features kernel and polars release
the GIL) or, with ``--host-mode processes``, in the processes of a ``HostPool``, for hosts
where something in the host side holds the GIL (docs/running.md has the measurement of
both). ``HostPool`` starts ``workers`` processes once per run (spawn: never a fork of a
process whose torch / ONNX Runtime / polars threads are running), each of which opens the
run (its scalers, feature names and calendar; never the backend) and the data root from the
plan's ``WorkerSpec``, and returns a date as a ``ScaledDay``: the scaled
``(S, M, F)`` float32 grid, its mask, symbols, minutes and cleaning counts, pickled
through the pool's pipe. Errors keep their type and message (``tthf.errors`` pickle by
their message), so a bad date is still recorded as failed with its reason.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from tthf.engine.data import marketdata
from tthf.engine.features import build_scaled_day
from tthf.engine.features.scalers import Scalers
from tthf.engine.runtime.plan import WorkerSpec
from tthf.engine.runtime.stages import Measured
from tthf.engine.store import Store


@dataclass
class ScaledDay:
    """What the predict stage needs of a day: its scaled grid and where each cell is."""

    symbols: list[str]
    minutes: np.ndarray
    mask: np.ndarray
    scaled: np.ndarray
    counts: dict[str, int]


def read_raw(data_root: Store, day: dt.date, calendar: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """The day's raw rows and the reader's counts (the read stage)."""
    counts: dict[str, int] = {}
    return marketdata.read_day(data_root, day, counts=counts, calendar=calendar), counts


def scale_raw(
    raw: pl.DataFrame,
    day: dt.date,
    scalers: Scalers,
    feature_names: Sequence[str],
    *,
    source: str,
    calendar: str,
    counts: dict[str, int],
) -> ScaledDay:
    """The day's features scaled in the run's order (the features stage); ``counts`` first, then its own."""
    feats = build_scaled_day(raw, day, scalers, feature_names, source=source, calendar=calendar)
    return ScaledDay(feats.symbols, feats.minutes, feats.mask, feats.scaled, {**counts, **feats.counts})


def cpu_shares(cores: Sequence[int], workers: int) -> list[set[int]]:
    """Each worker's CPUs: contiguous, disjoint shares while there are enough, else one each, round robin."""
    cores = sorted(cores)
    if workers >= len(cores):
        return [{cores[k % len(cores)]} for k in range(workers)]
    edges = np.linspace(0, len(cores), workers + 1).astype(int)
    return [set(cores[a:b]) for a, b in itertools.pairwise(edges)]


#: the worker process's state, set once by ``_init``
_WORKER: dict[str, Any] = {}


def _init(spec: WorkerSpec, shares: list[set[int]], counter: Any) -> None:
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.sched_setaffinity(0, shares[index % len(shares)])
    run = spec.run.open()
    _WORKER.update(
        store=spec.data.open(),
        scalers=run.load_scalers(),
        feature_names=list(run.config.feature_names),
        calendar=run.config.calendar,
    )


def _host_day(day: dt.date) -> Measured:
    store: Store = _WORKER["store"]
    calendar: str = _WORKER["calendar"]
    t0 = time.perf_counter()
    raw, counts = read_raw(store, day, calendar)
    t1 = time.perf_counter()
    source = store.uri(marketdata.partition(day))
    out = scale_raw(
        raw, day, _WORKER["scalers"], _WORKER["feature_names"], source=source, calendar=calendar, counts=counts
    )
    return Measured(out, {"read": t1 - t0, "features": time.perf_counter() - t1})


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

    def day(self, day: dt.date) -> Measured:
        """The date's host side, computed and timed by the next free worker (its errors re-raised here)."""
        return self._pool.submit(_host_day, day).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> HostPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

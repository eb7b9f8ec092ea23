"""``--executor ray``: the batch job on a Ray cluster, whole dates on a pool of actors.

Why Ray Core actors, not Ray Data: the unit of work is a whole date (windows never cross
dates), and a date's work already is a tuned pipeline (parquet read, polars features, the C++
window kernel, pinned buffers, the backend) that ends in one file. Ray Data would cut a date's
rows into blocks of its own size that every actor would have to reassemble, and its row-level
checkpointing would duplicate the run manifest. One actor per worker keeps the local
executor's code path for a date and uses Ray for what it does well: placing processes with
their CPUs and GPUs across nodes, and telling the driver when one died.

Each worker (``DateWorker``) opens the run, its data root and its backend once, then computes
whole dates with the local executor's stages (``day_stages``, ``finish``), writes each date's
file atomically and returns the date's ``DateResult`` (a few hundred bytes, never the arrays).
The driver (this process) owns the manifest: its ``Recorder`` records each date as it arrives
and reports the dates in date order. At most ``DATES_PER_WORKER`` dates are queued on a worker
(one computing, one waiting), so a worker holds one date's data at a time.

Faults. A date whose data is bad comes back ``failed`` with its reason, as it does locally. A
worker that dies (its process killed, its node lost) fails the calls queued on it: the driver
starts a replacement, gives the date that was computing to the next free worker up to
``RayConfig.retries`` more times, then records it failed; the date queued behind it is
requeued without counting. An error that is not about a date's data (a bug, a backend that
fails) stops the run, as it does locally.

Sizing (``size_workers``): CPU workers split the free CPUs less ``RESERVED_CPUS``, kept for Ray's
own tasks (actors that hold every CPU starve them and the job hangs: ray-project/ray#44687); GPU
workers ask for ``gpus_per_worker`` each. A request that does not fit is sized down, with a warning.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from tthf.engine.inference_manifest import DateResult, RaySettings
from tthf.engine.runs import Run
from tthf.engine.runtime.backends import open_backend
from tthf.engine.runtime.day import DayHost, DayPredictor, day_stages, finish
from tthf.engine.runtime.options import RayConfig
from tthf.engine.runtime.plan import InferencePlan, WorkerSpec
from tthf.engine.runtime.recorder import InferenceSummary, Recorder
from tthf.engine.runtime.stages import Pipeline, Stage
from tthf.errors import ExecutorError, TthfError

log = logging.getLogger("tthf.run")

__all__ = [
    "CPUS_PER_WORKER",
    "DateWorker",
    "Sizing",
    "connect",
    "execute_ray",
    "import_ray",
    "size_workers",
]

EXECUTOR = "ray"
#: CPUs the workers leave free for Ray's own tasks and the driver (ray-project/ray#44687)
RESERVED_CPUS = 0.5
#: default CPUs per CPU worker: its inference threads; fatter workers hold fewer dates in memory and start
#: faster, and on 2 cores one worker of 2 threads was as fast as two of 1 (docs/running.md)
CPUS_PER_WORKER = 2
#: calls queued on one worker: the date it computes and the next, so it never waits for the driver
DATES_PER_WORKER = 2
#: how long the first workers may take to be placed and to open the run (GPU nodes may be scaling up)
START_TIMEOUT_S = 300.0
#: how long an address may take to answer before it counts as unreachable
PROBE_TIMEOUT_S = 5.0
#: how long a dead worker's other calls may take to resolve
HARVEST_TIMEOUT_S = 10.0
#: how long closing waits for Ray to take the workers' resources back (the kill is asynchronous)
RELEASE_TIMEOUT_S = 10.0
_POLL_S = 1.0
_DEFAULT_PORTS = {"gcs": 6379, "client": 10001}


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(
            "--executor ray needs Ray, which is not installed here: pip install 'tthf[ray]' "
            "(on every node of the cluster), or run with --executor local"
        ) from exc
    return ray


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _probe(address: str) -> None:
    """Fail in seconds when nothing answers at ``address`` (``ray.init`` would wait minutes)."""
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host:
        host, port = port, ""
    host = host.strip("[]")  # [::1]:6379
    number = int(port) if port.isdigit() else _DEFAULT_PORTS["client" if client else "gcs"]
    try:
        socket.create_connection((host, number), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ExecutorError(
            f"cannot reach the Ray cluster at {address}: nothing answers on {host}:{number} "
            f"({exc.strerror or exc}); start it with `ray start --head` there, check the address and the firewall, "
            "or omit --ray-address to run on a local cluster"
        ) from exc


@contextlib.contextmanager
def connect(ray: Any, config: RayConfig) -> Iterator[None]:
    """Join the cluster at ``config.address``, or start a local one sized to this machine (shut down after).

    A process already connected (a notebook, a test session) keeps its connection.
    """
    if ray.is_initialized():
        log.info("ray: using this process's Ray connection%s", " (--ray-address ignored)" if config.address else "")
        yield
        return
    if config.address not in (None, "auto"):
        _probe(config.address)
    t0 = time.perf_counter()
    try:
        if config.address is None:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=config.address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = config.address or "a local cluster"
        raise ExecutorError(
            f"cannot connect to Ray at {where}: {_one_line(exc)}; check `ray status` on the head node and the address "
            "(auto, host:6379 or ray://host:10001), or omit --ray-address to run on a local cluster"
        ) from exc
    log.info(
        "ray: %s in %.1fs",
        f"joined {config.address}" if config.address else "started a local cluster",
        time.perf_counter() - t0,
    )
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Sizing:
    """How many workers start and what each asks Ray for; ``note`` says what was sized down and why."""

    workers: int
    num_cpus: float
    num_gpus: float
    threads: int | None  # inference threads per CPU worker (None: GPU workers)
    note: str = ""

    def settings(self, config: RayConfig) -> RaySettings:
        """What the manifest records (not in the settings key: a date done locally is done for Ray too)."""
        return RaySettings(
            address=config.address or "local",
            workers=self.workers,
            cpus_per_worker=self.num_cpus,
            gpus_per_worker=self.num_gpus,
            threads=self.threads,
            retries=config.retries,
        )


def _floor4(x: float) -> float:
    """Ray counts resources in units of 1e-4; round down so the workers always fit."""
    return math.floor(x * 1e4) / 1e4


def size_workers(config: RayConfig, cpus: float, gpus: float) -> Sizing:
    """The worker pool for a cluster with ``cpus`` and ``gpus`` free (see the module doc).

    CPU workers: one per ``CPUS_PER_WORKER`` free CPUs by default, at most one per CPU, splitting
    ``cpus - RESERVED_CPUS`` between them. GPU workers: ``gpus / gpus_per_worker`` (at most), each
    with up to one CPU for its features.
    """
    budget = cpus - RESERVED_CPUS
    if budget <= 0:
        raise ExecutorError(
            f"the Ray cluster has {cpus:g} free CPUs; tthf's workers need more than {RESERVED_CPUS:g} "
            "(that much is left for Ray's own tasks): free some CPUs or add nodes"
        )
    gpu = config.gpus_per_worker > 0
    if gpu:
        fit = math.floor(gpus / config.gpus_per_worker + 1e-9)
        if fit == 0:
            raise ExecutorError(
                f"--gpus-per-worker {config.gpus_per_worker:g}: the Ray cluster has {gpus:g} free GPUs; "
                "add GPU nodes, or use --gpus-per-worker 0 for CPU workers"
            )
    else:
        fit = max(1, math.floor(cpus))
    wanted = config.workers or (fit if gpu else max(1, math.floor(cpus / CPUS_PER_WORKER)))
    workers = min(wanted, fit)
    note = ""
    if wanted > fit:
        why = (
            f"{gpus:g} free GPUs give {fit} workers of {config.gpus_per_worker:g}; the others would wait forever"
            if gpu
            else f"{cpus:g} free CPUs give {fit} workers; more would hold every CPU and starve Ray's own tasks, "
            "so the job would hang (ray-project/ray#44687)"
        )
        note = f"--workers {wanted} does not fit: {why}; using {workers} workers"
    share = budget / workers
    if gpu:
        return Sizing(workers, _floor4(min(1.0, share)), config.gpus_per_worker, None, note)
    return Sizing(workers, _floor4(share), 0.0, max(1, math.floor(cpus / workers)), note)


class DateWorker:
    """One Ray actor's state: the run, data root and backend, opened once; then one whole date per call."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._opened: tuple[Run, list[Stage]] | None = None

    def open(self) -> str:
        """Open the run, its data root and backend (once); returns this worker's name."""
        if self._opened is None:
            spec = self.spec
            if spec.threads:
                import torch

                torch.set_num_threads(spec.threads)
            run = spec.run.open()
            backend = open_backend(run, spec.backend, threads=spec.threads, rebuild=spec.rebuild)
            predictor = DayPredictor(
                run, backend, stride=spec.stride, batch_size=spec.options.batch_size, windowing=spec.options.windowing
            )
            host = DayHost(run, spec.data.open())
            self._opened = (run, day_stages(host.stages(), predictor, spec.options.fmt))
        return self.name

    def run_date(self, iso: str) -> DateResult:
        """Read, features, predict, encode and write one date; its manifest entry goes back to the driver."""
        self.open()
        assert self._opened is not None
        run, stages = self._opened
        (item,) = Pipeline(stages, overlap=False).run([dt.date.fromisoformat(iso)])
        spec = self.spec
        return finish(run, item, spec.options, spec.settings, spec.backend, executor=EXECUTOR, worker=self.name)


@dataclass
class _Slot:
    """One worker of the pool and the calls queued on it, oldest (the one computing) first."""

    actor: Any
    calls: list[tuple[Any, str]] = field(default_factory=list)  # (object ref, date)


class _Pool:
    """The driver's side of the workers: queue dates on them, collect results, replace the dead."""

    def __init__(self, ray: Any, spec: WorkerSpec, sizing: Sizing, retries: int) -> None:
        self.ray = ray
        self.spec = spec
        self.sizing = sizing
        self.retries = retries
        self.remote = ray.remote(DateWorker)
        self.slots: list[_Slot] = []
        self.attempts: Counter[str] = Counter()

    def _actor(self) -> Any:
        return self.remote.options(
            num_cpus=self.sizing.num_cpus, num_gpus=self.sizing.num_gpus, scheduling_strategy="SPREAD"
        ).remote(self.spec)

    def start(self) -> None:
        """Start the workers and wait until every one has opened the run and its backend."""
        ray = self.ray
        self.slots = [_Slot(self._actor()) for _ in range(self.sizing.workers)]
        try:
            names = ray.get([slot.actor.open.remote() for slot in self.slots], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as exc:
            raise ExecutorError(
                f"{self.sizing.workers} Ray workers of {self.sizing.num_cpus:g} CPUs and {self.sizing.num_gpus:g} GPUs "
                f"did not start within {START_TIMEOUT_S:.0f}s; the cluster is busy or smaller than it reports "
                "(`ray status`): pass fewer --workers or free resources"
            ) from exc
        except ray.exceptions.RayTaskError as exc:
            raise _cause(exc) from None
        except ray.exceptions.RayActorError as exc:
            raise ExecutorError(
                f"a Ray worker could not start: {_one_line(exc)}; install the same tthf on every node "
                "(pip install 'tthf[ray]')"
            ) from exc
        log.info("ray: %d workers ready (%s)", len(names), ", ".join(names))

    def close(self) -> None:
        """Kill the workers and wait (briefly) until Ray has their resources back, for the next call to size."""
        held = self.ray.available_resources().get("CPU", 0.0)
        for slot in self.slots:
            self.ray.kill(slot.actor, no_restart=True)
        freed = held + len(self.slots) * self.sizing.num_cpus - 1e-6
        deadline = time.monotonic() + RELEASE_TIMEOUT_S
        while self.slots and self.ray.available_resources().get("CPU", 0.0) < freed and time.monotonic() < deadline:
            time.sleep(0.05)

    def run(self, todo: list[dt.date], recorder: Recorder, *, fail_fast: bool) -> bool:
        """Compute every date of ``todo``; True when ``fail_fast`` stopped at a failed date."""
        waiting = deque(day.isoformat() for day in todo)
        owner: dict[Any, _Slot] = {}
        while waiting or owner:
            self._submit(waiting, owner)
            ready, _ = self.ray.wait(list(owner), num_returns=1, timeout=_POLL_S)
            for ref in ready:
                slot = owner.get(ref)
                if slot is None:  # collected with its dead worker's other calls
                    continue
                for result in self._collect(slot, ref, waiting, owner):
                    recorder.arrived(result)
                    if result.status == "failed" and fail_fast:
                        return True
        return False

    def _submit(self, waiting: deque[str], owner: dict[Any, _Slot]) -> None:
        for slot in self.slots:
            while waiting and len(slot.calls) < DATES_PER_WORKER:
                day = waiting.popleft()
                ref = slot.actor.run_date.remote(day)
                slot.calls.append((ref, day))
                owner[ref] = slot

    def _collect(self, slot: _Slot, ref: Any, waiting: deque[str], owner: dict[Any, _Slot]) -> list[DateResult]:
        """The results that ``ref`` brings: its date's, or, when its worker died, what the worker left."""
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            raise _cause(exc) from None
        except self.ray.exceptions.RayActorError as exc:
            return self._died(slot, exc, waiting, owner)
        owner.pop(ref)
        slot.calls = [call for call in slot.calls if call[0] != ref]
        return [result]

    def _died(self, slot: _Slot, exc: BaseException, waiting: deque[str], owner: dict[Any, _Slot]) -> list[DateResult]:
        """A worker died: keep what it finished, retry the date it was computing, requeue the rest, replace it."""
        refs = [ref for ref, _ in slot.calls]
        self.ray.wait(refs, num_returns=len(refs), timeout=HARVEST_TIMEOUT_S)
        finished, lost = [], []
        for ref, day in slot.calls:
            owner.pop(ref, None)
            try:
                finished.append(self.ray.get(ref, timeout=0))
            except self.ray.exceptions.RayTaskError as error:
                raise _cause(error) from None
            except Exception:  # the worker's death, in whatever form Ray reports it
                lost.append(day)
        slot.calls = []
        self.ray.kill(slot.actor, no_restart=True)
        slot.actor = self._actor()
        if not lost:
            return finished
        running, queued = lost[0], lost[1:]
        waiting.extendleft(reversed(queued))
        self.attempts[running] += 1
        tries = self.attempts[running]
        log.warning(
            "ray: a worker died while computing %s (attempt %d of %d): %s",
            running,
            tries,
            self.retries + 1,
            _one_line(exc),
        )
        if tries <= self.retries:
            waiting.appendleft(running)
            return finished
        reason = (
            f"its worker died on each of {tries} attempts (last: {_one_line(exc)}); a date that kills its worker "
            "is often out of memory: check the worker logs (`ray logs`) and give workers more memory"
        )
        return [
            *finished,
            DateResult(
                running,
                "failed",
                reason=reason,
                settings=self.spec.settings,
                backend=self.spec.backend,
                executor=EXECUTOR,
            ),
        ]


def _cause(exc: Any) -> BaseException:
    """A worker's own error as the driver raises it: a tthf error as it is, anything else with Ray's traceback."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, TthfError) else exc


def _warn_local_paths(plan: InferencePlan, config: RayConfig) -> None:
    if config.address is None:
        return
    for what, uri in (("run store", plan.run.ref.root), ("data root", plan.data.uri())):
        if not uri.startswith("s3://"):
            log.warning(
                "ray: the %s %s is a local folder: every node must see it at that path (a shared file "
                "system), or put it on S3",
                what,
                uri,
            )


def execute_ray(
    plan: InferencePlan,
    *,
    on_date: Callable[[DateResult], None] | None = None,
) -> InferenceSummary:
    """Compute the plan's dates on Ray workers (see the module doc); results reach ``on_date`` in date order.

    Workers open the backend the plan resolved (``plan.backend.name``), so every date of a call
    has the same backend and settings key, and the run and data root from their locators.
    """
    config = plan.options.ray
    recorder = Recorder(plan, on_date)
    if not plan.todo:  # nothing to compute: no cluster needed
        recorder.close()
        return recorder.summary(0.0, executor=EXECUTOR, workers=0)
    ray = import_ray()
    _warn_local_paths(plan, config)
    with connect(ray, config):
        free = ray.available_resources()
        sizing = size_workers(config, free.get("CPU", 0.0), free.get("GPU", 0.0))
        if sizing.note:
            log.warning("ray: %s", sizing.note)
        plan.manifest.settings = replace(plan.manifest.settings, ray=sizing.settings(config))
        pool = _Pool(ray, plan.worker_spec(threads=sizing.threads), sizing, config.retries)
        try:
            t0 = time.perf_counter()
            pool.start()
            log.info("ray: workers started in %.1fs", time.perf_counter() - t0)
            wall = time.perf_counter()
            stopped = pool.run(plan.todo, recorder, fail_fast=plan.options.fail_fast)
            wall = time.perf_counter() - wall
        finally:
            pool.close()
    recorder.close(stopped=stopped)
    return recorder.summary(wall, executor=EXECUTOR, workers=sizing.workers)

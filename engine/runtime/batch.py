"""Batch inference over many dates: ``tthf-run``'s library function.

``plan_inference`` opens the run, its data root and backend and decides which dates to
compute; ``execute`` runs them. Per date, as overlapping stages
(``tthf.engine.runtime.stages``, bounded queues): read the raw bars (local or S3; the
next dates are read while this one computes), build the features exactly as training
did and scale them in the run's feature order, cut windows with the C++ kernel straight
into the next free (pinned, on GPU) buffer and predict with the chosen backend
(``tthf.engine.runtime.runner``), encode, and write one predictions file into the run's
``inference/`` folder atomically. The run manifest (``tthf.engine.inference_manifest``) is
rewritten after every date with its outcome, so a killed run loses at most the dates in
flight; a rerun skips dates already done with the same model and settings. A date that
fails is recorded with a one-line reason and the others go on.

Two executors run a plan: ``execute`` (``--executor local``, the stages above in this
process) and ``tthf.engine.runtime.ray_executor.execute_ray`` (``--executor ray``, whole
dates on the actors of a Ray cluster). Both compute a date with the same ``DayPredictor``,
``day_stages`` and ``_finish``, and hand its result to one ``Recorder``, which owns the
manifest; the executor and its settings are recorded in the manifest but are not part of
the settings key, so a date done by one executor is skipped by the other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

import tthf
from tthf.engine import predictions, windows
from tthf.engine.config import DENSE_BATCH
from tthf.engine.data import marketdata
from tthf.engine.data.dates import parse_dates
from tthf.engine.inference_manifest import DateResult, InferenceSettings, RunManifest
from tthf.engine.runs import CHECKPOINT, SCALERS, Run, find_run, output_key
from tthf.engine.runtime.backends import BACKENDS, Backend, open_backend
from tthf.engine.runtime.backends.tensorrt import Rebuild
from tthf.engine.runtime.host_workers import HostPool, HostSpec, ScaledDay, read_raw, scale_raw
from tthf.engine.runtime.runner import WINDOWING, DayOutputs, make_runner
from tthf.engine.runtime.stages import Item, Pipeline, Stage
from tthf.engine.store import Store, open_store
from tthf.errors import DataError, StoreError, UsageError

log = logging.getLogger("tthf.run")

__all__ = [
    "EXECUTORS",
    "HOST_MODES",
    "DateResult",
    "DayPredictor",
    "InferencePlan",
    "InferenceSummary",
    "RayConfig",
    "Recorder",
    "RunOptions",
    "execute",
    "plan_inference",
    "run_inference",
]

#: where the dates run: this process (overlapped stages) or the actors of a Ray cluster
EXECUTORS = ("local", "ray")
#: how --host-workers N > 1 runs its N dates at once: threads of this process (the default:
#: the kernel and polars release the GIL, nothing is copied) or worker processes
#: (tthf.engine.runtime.host_workers: no GIL at all, but each day's grid is pickled back)
HOST_MODES = ("threads", "processes")


@dataclass(frozen=True)
class RayConfig:
    """How ``--executor ray`` runs, validated on construction (the sizing itself needs the cluster).

    ``address`` None starts a local cluster sized to this machine; ``auto``, ``host:port``
    or ``ray://host:port`` joins one. ``workers`` None sizes the pool to the cluster.
    ``retries``: how many times a date whose worker died is given to another worker.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    retries: int = 2

    def __post_init__(self) -> None:
        if self.address is not None and not self.address.strip():
            raise UsageError(
                "--ray-address is empty; pass auto, host:port or ray://host:port, or omit it to start a local cluster"
            )
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker:g}")
        if self.retries < 0:
            raise UsageError(f"the retries of a date whose worker died must be >= 0, got {self.retries}")


@dataclass(frozen=True)
class RunOptions:
    """What ``tthf-run`` was asked to do, validated on construction; recorded in the run manifest."""

    dates: str
    dense: bool = False
    sample_every: int | None = None
    backend: str = "auto"
    batch_size: int = DENSE_BATCH
    fmt: str = "csv"
    overwrite: bool = False
    data_root: str | None = None
    fail_fast: bool = False
    overlap: bool = True  # False: the stages one after another (to measure the overlap)
    windowing: str = "auto"  # GPU only: where windows are cut (tthf.engine.runtime.runner.WINDOWING)
    executor: str = "local"  # one of EXECUTORS
    ray: RayConfig = RayConfig()  # --executor ray only
    host_workers: int = 1  # --executor local: dates whose read + features run at once
    host_mode: str = "threads"  # one of HOST_MODES: how host_workers > 1 runs

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UsageError(f"unknown --executor {self.executor!r}; use one of {', '.join(EXECUTORS)}")
        if self.executor != "ray" and self.ray != RayConfig():
            raise UsageError("--ray-address, --workers and --gpus-per-worker need --executor ray")
        if self.host_workers < 1:
            raise UsageError(f"--host-workers must be >= 1, got {self.host_workers}")
        if self.host_workers != 1 and self.executor != "local":
            raise UsageError("--host-workers is for --executor local; Ray's workers are sized by --workers")
        if self.host_mode not in HOST_MODES:
            raise UsageError(f"unknown --host-mode {self.host_mode!r}; use one of {', '.join(HOST_MODES)}")
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.fmt not in predictions.FORMATS:
            raise UsageError(f"unknown --format {self.fmt!r}; use one of {', '.join(predictions.FORMATS)}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.windowing not in WINDOWING:
            raise UsageError(f"unknown --windowing {self.windowing!r}; use one of {', '.join(WINDOWING)}")
        if self.sample_every is not None and self.sample_every < 1:
            raise UsageError(f"--sample-every must be >= 1, got {self.sample_every}")

    def host_workers_for(self, n_dates: int) -> int:
        """Dates whose read + features run at once: the option, never more than the dates."""
        return max(1, min(self.host_workers, n_dates))

    def stride(self, run: Run) -> int:
        """1 in dense mode, else the sparse sampling step (the option, or the run's ``sample_every``)."""
        if self.dense:
            return 1
        stride = self.sample_every if self.sample_every is not None else run.config.sample_every
        if stride < 1:
            raise UsageError(f"the run's sample_every must be >= 1, got {stride}; pass --sample-every")
        return stride


@dataclass
class InferenceSummary:
    run: str
    backend: str
    stride: int
    results: list[DateResult]
    seconds: float
    overlap: bool = True
    pipeline_seconds: float = 0.0  # wall time of the dates that were computed
    executor: str = "local"
    workers: int = 1  # processes that computed dates (Ray actors; 1 for the local executor)

    def stage_seconds(self) -> dict[str, float]:
        """Busy seconds per stage over the dates computed in this call (read, features, ...)."""
        total: dict[str, float] = {}
        for r in self.by_status("ok"):
            for k, v in r.seconds.items():
                total[k] = total.get(k, 0.0) + v
        return total

    def by_status(self, status: str) -> list[DateResult]:
        return [r for r in self.results if r.status == status]

    @property
    def windows(self) -> int:
        return sum(r.windows for r in self.results if r.status == "ok")

    @property
    def exit_code(self) -> int:
        return 1 if self.by_status("failed") else 0


class DayPredictor:
    """Everything that turns one day's raw bars into its predictions table; built once per run.

    ``features`` and ``predict_features`` are the two compute stages of the pipeline.
    """

    def __init__(self, run: Run, backend: Backend, *, stride: int, batch_size: int, windowing: str = "auto") -> None:
        cfg = run.config
        self.feature_names = list(cfg.feature_names)
        self.seq_len = cfg.model.seq_len
        self.stride = stride
        self.scalers = run.load_scalers()
        self.calendar = cfg.calendar
        self.runner = make_runner(
            backend, capacity=batch_size, seq_len=self.seq_len, n_features=len(self.feature_names), windowing=windowing
        )

    def features(
        self, raw: pl.DataFrame, day: dt.date, *, source: str = "", counts: dict[str, int] | None = None
    ) -> ScaledDay:
        """The day's features scaled in the run's order; its cleaning counts follow ``counts`` (the reader's)."""
        return scale_raw(
            raw, day, self.scalers, self.feature_names, source=source, calendar=self.calendar, counts=counts or {}
        )

    def host_spec(self, data_root: Store, endpoint_url: str | None) -> HostSpec:
        """What a worker process needs to compute this run's features (``HostPool``)."""
        return HostSpec(data_root.uri(), endpoint_url, self.scalers.to_json(), tuple(self.feature_names), self.calendar)

    def predict_features(self, day: ScaledDay) -> tuple[pl.DataFrame, DayOutputs]:
        """Predictions table of a day from its scaled grid; the runner's outputs say where time went."""
        result = self.runner.run(day.scaled, day.mask, stride=self.stride)
        dense_pos = (
            (result.sym, result.minute) if self.stride == 1 else windows.window_positions(day.mask, self.seq_len, 1)
        )
        frame = predictions.assemble(
            day.symbols,
            day.minutes,
            dense_pos,
            (result.sym, result.minute),
            result.outputs,
            seq_len=self.seq_len,
            stride=self.stride,
        )
        return frame, result


def settings_key(run: Run, options: RunOptions, stride: int, backend: str, data_root: str) -> str:
    """Identifies a date's output: same key means a rerun may skip it."""
    payload = json.dumps(
        {
            "checkpoint": run.sha256(CHECKPOINT),
            "scalers": run.sha256(SCALERS),
            "stride": stride,
            "format": options.fmt,
            "backend": backend,
            "data_root": data_root,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _versions(backend: Backend) -> dict[str, str]:
    import torch

    return {
        "tthf": tthf.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "polars": pl.__version__,
        "numpy": np.__version__,
        **backend.versions(),
    }


@dataclass
class InferencePlan:
    """An opened run with its backend, what to compute, and the manifest to record it in."""

    run: Run
    options: RunOptions
    stride: int
    data: Store
    backend: Backend
    settings: str
    manifest: RunManifest
    todo: list[dt.date]
    skipped: list[DateResult]
    missing: list[DateResult]
    opened: float = field(default_factory=time.perf_counter)
    endpoint_url: str | None = None  # of an s3:// data root, for the host worker processes


def plan_inference(
    store: Store | str,
    run_name: str,
    options: RunOptions,
    *,
    experiment: str | None = None,
    model_type: str | None = None,
    rebuild: Rebuild | None = None,
    endpoint_url: str | None = None,
) -> InferencePlan:
    """Open the run, its data root and backend; sort the selected dates into todo, skipped and missing.

    ``rebuild`` builds a TensorRT engine the export lacks for this GPU (``tthf.export.rebuild_engine``);
    ``endpoint_url`` is the S3-compatible server of an ``s3://`` data root.
    """
    opened = time.perf_counter()
    run = Run.open(find_run(store, run_name, experiment=experiment, model_type=model_type))
    stride = options.stride(run)
    data = open_store(options.data_root or run.config.data_root, endpoint_url=endpoint_url)
    selection = parse_dates(options.dates, marketdata.list_dates(data), calendar=run.config.calendar)
    backend = open_backend(run, options.backend, rebuild=rebuild)
    settings = settings_key(run, options, stride, backend.name, data.uri())
    previous = RunManifest.load(run)
    dates = dict(previous.dates) if previous else {}
    missing = [
        DateResult(day.isoformat(), "no_data", reason=f"no data under {data.uri(marketdata.partition(day))}")
        for day in selection.missing
    ]
    todo, skipped = [], []
    for day in selection.dates:
        done = _already_done(run, dates.get(day.isoformat()), day, options, settings)
        if done:
            skipped.append(done)
        else:
            todo.append(day)
    local = options.executor == "local"
    recorded = InferenceSettings(
        settings,
        backend.name,
        stride,
        options.dense,
        options.fmt,
        data.uri(),
        options.executor,
        host_workers=options.host_workers_for(len(todo)) if local else None,
        host_mode=options.host_mode if local else None,
    )
    manifest = RunManifest(run.ref.name, recorded, _versions(backend), dates)
    return InferencePlan(
        run, options, stride, data, backend, settings, manifest, todo, skipped, missing, opened, endpoint_url
    )


def _already_done(
    run: Run, previous: DateResult | None, day: dt.date, options: RunOptions, settings: str
) -> DateResult | None:
    key = output_key(day, options.fmt)
    if (
        options.overwrite
        or previous is None
        or previous.status != "ok"
        or previous.settings != settings
        or not run.exists(key)
    ):
        return None
    return DateResult(
        day.isoformat(),
        "skipped",
        rows=previous.rows,
        windows=previous.windows,
        file=run.store.uri(key),
        settings=settings,
        backend=previous.backend,
        executor=previous.executor,
        worker=previous.worker,
        reason="already done with the same model and settings",
    )


class Recorder:
    """What every executor does with finished dates: records them and reports them in date order.

    Each computed date is recorded in the manifest, and the manifest rewritten, as soon as it
    arrives (in any order: Ray workers finish out of order); ``on_date`` sees the dates in date
    order. Dates without data come first; dates already done are reported among the computed
    ones, when a later date arrives or at the end.
    """

    def __init__(self, plan: InferencePlan, on_date: Callable[[DateResult], None] | None = None) -> None:
        self.plan = plan
        self.on_date = on_date
        self.results: list[DateResult] = []
        self._todo = [day.isoformat() for day in plan.todo]
        self._arrived: dict[str, DateResult] = {}
        self._skipped = list(plan.skipped)
        for missing in plan.missing:
            plan.manifest.record(missing)
            self._report(missing)

    def _report(self, result: DateResult) -> None:
        self.results.append(result)
        if self.on_date:
            self.on_date(result)

    def _release(self, result: DateResult) -> None:
        while self._skipped and self._skipped[0].date < result.date:
            self._report(self._skipped.pop(0))
        self._report(result)

    def arrived(self, result: DateResult) -> None:
        """Record a computed date now; report it once every earlier date is reported."""
        self.plan.manifest.record(result)
        self.plan.manifest.write(self.plan.run)
        self._arrived[result.date] = result
        while self._todo and self._todo[0] in self._arrived:
            self._release(self._arrived.pop(self._todo.pop(0)))

    def close(self, *, stopped: bool = False) -> None:
        """The end: report what is left. ``stopped`` (--fail-fast): only the dates computed so far."""
        for day in sorted(self._arrived):
            self._release(self._arrived.pop(day))
        if not stopped:
            for result in self._skipped:
                self._report(result)
        self._skipped.clear()
        if self.plan.missing:
            self.plan.manifest.write(self.plan.run)

    def summary(self, wall: float, *, executor: str = "local", workers: int = 1) -> InferenceSummary:
        """The call's summary; ``wall`` is the time spent computing dates."""
        plan = self.plan
        return InferenceSummary(
            plan.run.ref.name,
            plan.backend.name,
            plan.stride,
            sorted(self.results, key=lambda r: r.date),
            time.perf_counter() - plan.opened,
            overlap=plan.options.overlap,
            pipeline_seconds=wall,
            executor=executor,
            workers=workers,
        )


def execute(plan: InferencePlan, *, on_date: Callable[[DateResult], None] | None = None) -> InferenceSummary:
    """Compute the plan's dates in this process, write each file and manifest entry; ``on_date`` in date order."""
    run, options = plan.run, plan.options
    recorder = Recorder(plan, on_date)
    predictor = DayPredictor(
        run, plan.backend, stride=plan.stride, batch_size=options.batch_size, windowing=options.windowing
    )
    wall = time.perf_counter()
    stopped = False
    n = options.host_workers_for(len(plan.todo))
    worker = socket.gethostname()
    with contextlib.ExitStack() as stack:
        pool = None
        if n > 1 and options.host_mode == "processes":
            pool = stack.enter_context(HostPool(predictor.host_spec(plan.data, plan.endpoint_url), n))
        stages = day_stages(predictor, plan.data, options.fmt, pool=pool)
        pipeline = Pipeline(stages, overlap=options.overlap, workers=_stage_workers(stages, n))
        items = stack.enter_context(contextlib.closing(pipeline.run(plan.todo)))
        for item in items:
            result = _finish(run, item, options.fmt, plan.settings, plan.backend.name, executor="local", worker=worker)
            recorder.arrived(result)
            if result.status == "failed" and options.fail_fast:
                stopped = True
                break
    recorder.close(stopped=stopped)
    return recorder.summary(time.perf_counter() - wall)


def _stage_workers(stages: list[Stage], n: int) -> dict[str, int]:
    """``n`` dates at once in every stage but predict, which takes the dates one by one, in order.

    Threads for the read, features and encode stages of this process, or (``--host-mode
    processes``) for the ``host`` stage, each waiting on its worker process.
    """
    return {name: n for name, _ in stages if name != "predict"}


def run_inference(
    store: Store | str,
    run_name: str,
    options: RunOptions,
    *,
    experiment: str | None = None,
    model_type: str | None = None,
    rebuild: Rebuild | None = None,
    endpoint_url: str | None = None,
    on_date: Callable[[DateResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> InferenceSummary:
    """Predict every selected date of ``run_name`` and write one file per date (see module doc).

    ``on_start(n)`` is called once with the number of dates, ``on_date`` with each date's
    result as soon as it is final (in date order).
    """
    plan = plan_inference(
        store,
        run_name,
        options,
        experiment=experiment,
        model_type=model_type,
        rebuild=rebuild,
        endpoint_url=endpoint_url,
    )
    if on_start:
        on_start(len(plan.todo) + len(plan.skipped) + len(plan.missing))
    if options.executor == "ray":
        # imported here: the Ray executor builds on this module (and imports Ray only when it runs)
        from tthf.engine.runtime.ray_executor import execute_ray

        return execute_ray(plan, on_date=on_date, rebuild=rebuild, endpoint_url=endpoint_url)
    return execute(plan, on_date=on_date)


# ---------------------------------------------------------------------------------------
# the stages: each takes the previous stage's typed payload


@dataclass
class RawDay:
    raw: pl.DataFrame
    counts: dict[str, int]


@dataclass
class PredictedDay:
    frame: pl.DataFrame
    outputs: DayOutputs
    counts: dict[str, int]
    host_seconds: dict[str, float]


@dataclass
class EncodedDay:
    data: bytes
    rows: int
    outputs: DayOutputs
    counts: dict[str, int]
    host_seconds: dict[str, float]


def host_stages(predictor: DayPredictor, data_root: Store, *, pool: HostPool | None = None) -> list[Stage]:
    """A date's host side: read -> features in this process, or one ``host`` stage on ``pool``'s workers."""
    if pool is not None:
        return [("host", lambda day, _: pool.day(day))]

    def read(day: dt.date, _: None) -> RawDay:
        return RawDay(*read_raw(data_root, day, predictor.calendar))

    def features(day: dt.date, state: RawDay) -> ScaledDay:
        source = data_root.uri(marketdata.partition(day))
        return predictor.features(state.raw, day, source=source, counts=state.counts)

    return [("read", read), ("features", features)]


def day_stages(predictor: DayPredictor, data_root: Store, fmt: str, *, pool: HostPool | None = None) -> list[Stage]:
    """The host stages -> predict -> encode; the caller writes (it owns the manifest)."""

    def predict(day: dt.date, state: ScaledDay) -> PredictedDay:
        frame, outputs = predictor.predict_features(state)
        return PredictedDay(frame, outputs, state.counts, state.host_seconds)

    def encode(day: dt.date, state: PredictedDay) -> EncodedDay:
        data = predictions.encode(state.frame, fmt)
        return EncodedDay(data, state.frame.height, state.outputs, state.counts, state.host_seconds)

    return [*host_stages(predictor, data_root, pool=pool), ("predict", predict), ("encode", encode)]


def _finish(run: Run, item: Item, fmt: str, settings: str, backend: str, *, executor: str, worker: str) -> DateResult:
    """Write a date's file (atomic) and turn its pipeline item into the manifest entry.

    ``executor`` and ``worker`` say where the date ran (recorded, not part of the settings key).
    """
    day: dt.date = item.key
    key = output_key(day, fmt)
    error = item.error
    if error is None:
        state: EncodedDay = item.payload
        t0 = time.perf_counter()
        try:
            run.write_bytes(key, state.data)
        except StoreError as exc:
            error = exc
        item.seconds["write"] = time.perf_counter() - t0
    if error is not None:
        if not isinstance(error, (DataError, StoreError)):
            raise error
        reason = " ".join(str(error).split())  # one line
        log.warning("%s failed in %s: %s", day, item.failed_in or "write", reason)
        return DateResult(
            day.isoformat(),
            "failed",
            reason=reason,
            settings=settings,
            backend=backend,
            executor=executor,
            worker=worker,
        )
    seconds = dict(item.seconds)
    host = seconds.pop("host", None)
    if host is not None:  # read + features ran in a worker process; the rest of the stage is the hand-over
        seconds.update(state.host_seconds)
        seconds["transfer"] = max(0.0, host - sum(state.host_seconds.values()))
    seconds["windows"] = state.outputs.seconds["windows"]
    seconds["inference"] = state.outputs.seconds["inference"]
    seconds["total"] = sum(item.seconds.values())
    return DateResult(
        day.isoformat(),
        "ok",
        rows=state.rows,
        windows=len(state.outputs.sym),
        seconds={k: round(v, 4) for k, v in seconds.items()},
        counts=state.counts,
        file=run.store.uri(key),
        settings=settings,
        backend=backend,
        windowing=state.outputs.windowing,
        executor=executor,
        worker=worker,
    )

"""Batch inference over many dates: ``tthf-run``'s library function.

``plan_inference`` opens the run, its data root and backend and decides which dates to
compute; ``execute`` runs them. Per date, as overlapping stages
(``tthf.engine.runtime.stages``, bounded queues): read the raw bars (local or S3; the
next dates are read while this one computes), build the features exactly as training
did and scale them in the run's feature order, cut windows with the C++ kernel straight
into the next free (pinned, on GPU) buffer and predict with the chosen backend
(``tthf.engine.runtime.runner``), encode, and write one predictions file into the run's
``inference/`` folder atomically. The run manifest (``tthf.engine.runtime.manifest``) is
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
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from tthf.engine import predictions, windows
from tthf.engine.data import marketdata
from tthf.engine.runs import Run, output_key
from tthf.engine.runtime.backends import Backend
from tthf.engine.runtime.backends.tensorrt import Rebuild
from tthf.engine.runtime.host_workers import HostPool, HostSpec, ScaledDay, read_raw, scale_raw
from tthf.engine.runtime.manifest import DateResult
from tthf.engine.runtime.options import RunOptions
from tthf.engine.runtime.plan import InferencePlan, plan_inference
from tthf.engine.runtime.recorder import InferenceSummary, Recorder
from tthf.engine.runtime.runner import DayOutputs, make_runner
from tthf.engine.runtime.stages import Item, Pipeline, Stage
from tthf.engine.store import Store
from tthf.errors import DataError, StoreError

log = logging.getLogger("tthf.run")

__all__ = [
    "DateResult",
    "DayPredictor",
    "execute",
    "run_inference",
]


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

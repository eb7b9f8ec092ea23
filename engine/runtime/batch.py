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
import logging
import socket
import time
from collections.abc import Callable

from tthf.engine.runtime.backends.tensorrt import Rebuild
from tthf.engine.runtime.day import DayPredictor, day_stages, finish
from tthf.engine.runtime.host_workers import HostPool
from tthf.engine.runtime.manifest import DateResult
from tthf.engine.runtime.options import RunOptions
from tthf.engine.runtime.plan import InferencePlan, plan_inference
from tthf.engine.runtime.recorder import InferenceSummary, Recorder
from tthf.engine.runtime.stages import Pipeline, Stage
from tthf.engine.store import Store

log = logging.getLogger("tthf.run")

__all__ = [
    "DateResult",
    "execute",
    "run_inference",
]


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
            result = finish(run, item, options.fmt, plan.settings, plan.backend.name, executor="local", worker=worker)
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

"""``--executor local``: the plan's dates through overlapping stages in this process.

The day's stages (``tthf.engine.runtime.day``) run as a ``Pipeline``
(``tthf.engine.runtime.stages``, bounded queues): the next dates are read and their
features built while this one is predicted, encoded and written. ``--host-workers N``
runs the read and features (``--host-mode processes``: the host side in worker processes,
``tthf.engine.runtime.host_workers``) of N dates at once; predict takes the dates one by
one, in date order. Each date is finished here and handed to the ``Recorder``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

from tthf.engine.inference_manifest import DateResult
from tthf.engine.runtime.day import DayHost, DayPredictor, day_stages, finish
from tthf.engine.runtime.host_workers import HostPool
from tthf.engine.runtime.plan import InferencePlan
from tthf.engine.runtime.recorder import InferenceSummary, Recorder
from tthf.engine.runtime.stages import Pipeline, Stage

__all__ = ["execute"]


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
        if n > 1 and options.host_mode == "processes":
            host = stack.enter_context(HostPool(plan.worker_spec(), n)).stages()
        else:
            host = DayHost(run, plan.data).stages()
        stages = day_stages(host, predictor, options.fmt)
        pipeline = Pipeline(stages, overlap=options.overlap, workers=_stage_workers(stages, n))
        items = stack.enter_context(contextlib.closing(pipeline.run(plan.todo)))
        for item in items:
            result = finish(run, item, options, plan.settings, plan.backend.name, executor="local", worker=worker)
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

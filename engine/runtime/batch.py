"""Batch inference over many dates: ``run_inference``, ``tthf-run``'s library function.

It plans the call (``tthf.engine.runtime.plan``: open the run, its data root and backend,
sort the dates into to do, already done and without data) and hands the plan to an
executor: ``--executor local`` (``tthf.engine.runtime.local_executor``, overlapping stages
in this process) or ``--executor ray`` (``tthf.engine.runtime.ray_executor``, whole dates on
the actors of a Ray cluster). Both compute a date with the same stages and ``finish``
(``tthf.engine.runtime.day``) and hand its result to one ``Recorder``
(``tthf.engine.runtime.recorder``), which owns the run manifest
(``tthf.engine.inference_manifest``): it is rewritten after every date, so a killed run loses
at most the dates in flight; a rerun skips dates already done with the same model and
settings, whichever executor did them. A date that fails is recorded with a one-line reason
and the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tthf.engine.inference_manifest import DateResult
from tthf.engine.runs import Run
from tthf.engine.runtime.backends.tensorrt import Rebuild
from tthf.engine.runtime.local_executor import execute
from tthf.engine.runtime.options import RunOptions
from tthf.engine.runtime.plan import plan_inference
from tthf.engine.runtime.ray_executor import execute_ray
from tthf.engine.runtime.recorder import InferenceSummary

__all__ = ["run_inference"]


def run_inference(
    run: Run,
    options: RunOptions,
    *,
    rebuild: Rebuild | None = None,
    endpoint_url: str | None = None,
    on_date: Callable[[DateResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> InferenceSummary:
    """Predict every selected date of the opened ``run`` (``tthf.engine.runs.open_run``) and write
    one file per date (see module doc).

    ``endpoint_url`` is the S3-compatible server of an ``s3://`` data root; ``on_start(n)`` is
    called once with the number of dates, ``on_date`` with each date's result as soon as it is
    final (in date order).
    """
    opened = time.perf_counter()
    plan = plan_inference(run, options, rebuild=rebuild, endpoint_url=endpoint_url, opened=opened)
    if on_start:
        on_start(len(plan.todo) + len(plan.skipped) + len(plan.missing))
    if options.executor == "ray":
        return execute_ray(plan, on_date=on_date)
    return execute(plan, on_date=on_date)

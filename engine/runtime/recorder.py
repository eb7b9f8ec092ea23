"""What every executor does with finished dates: the ``Recorder`` that records and reports them, and the summary.

The ``Recorder`` owns the run manifest for the length of a call: each computed date is
recorded (and the manifest rewritten) as soon as it arrives, in whatever order the
executor finishes them, and reported in date order. ``InferenceSummary`` is what the call
returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tthf.engine.inference_manifest import DateResult
from tthf.engine.runtime.plan import InferencePlan

__all__ = ["InferenceSummary", "Recorder"]


@dataclass
class InferenceSummary:
    """What a ``run_inference`` call returns: every selected date's result, in date order, and where the time went."""

    run: str
    backend: str
    stride: int
    results: list[DateResult]
    seconds: float
    overlap: bool = True
    pipeline_seconds: float = 0.0  # wall time of the dates that were computed
    executor: str = "local"
    workers: int = 1  # processes that computed dates (Ray actors; 1 for the local executor)
    precision: str = ""  # the backend's arithmetic (fp32, bf16, int8, fp16)

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
            precision=plan.backend.precision,
        )

"""``tthf-daily``: the scheduled job after each close, one library call.

1. **Freshness** (``tthf.engine.data.freshness``): the data root against the sessions completed
   at ``as_of``; stale data is reported and the job goes on with what there is.
2. **Predict** ``--dates new`` (``tthf.engine.runtime.batch.run_inference``): every completed
   session with data not yet predicted with the same settings: today's, a gap filled late, a
   date that failed before. A date that fails is recorded and the others go on.
3. **Score** the dates predicted and not yet in the rolling record
   (``tthf.engine.evaluation.rolling.evaluate_rolling`` with ``new``): a completed session is
   scored in full, since labels that cross the close are null by design. The dates whose
   prediction failed are recorded in the history as failed.

A second call the same day finds nothing new and writes nothing. The exit code says what
needs attention: ``StaleDataError``'s (8) for stale data, 1 for a failed date, 0 otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from tthf.engine.data.dates import NEW
from tthf.engine.data.freshness import Freshness, check_freshness, local_time
from tthf.engine.data.marketdata import list_dates
from tthf.engine.evaluation.evaluate import DateOutcome
from tthf.engine.evaluation.history import Thresholds
from tthf.engine.evaluation.rolling import ROLLING_NAME, RollingResult, evaluate_rolling
from tthf.engine.inference_manifest import DateResult
from tthf.engine.runs import Run
from tthf.engine.runtime.backends.tensorrt import Rebuild
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions
from tthf.engine.runtime.recorder import InferenceSummary
from tthf.engine.store import open_store
from tthf.errors import StaleDataError

__all__ = ["DailyResult", "run_daily"]


@dataclass
class DailyResult:
    """The three steps' results."""

    freshness: Freshness
    inference: InferenceSummary
    rolling: RollingResult

    @property
    def predicted(self) -> list[str]:
        return [r.date for r in self.inference.by_status("ok")]

    @property
    def failed(self) -> dict[str, str]:
        """Dates that failed to predict or to score, with the reason."""
        out = {r.date: r.reason for r in self.inference.by_status("failed")}
        if self.rolling.evaluation is not None:
            out.update({o.date: o.reason for o in self.rolling.evaluation.by_status("failed")})
        return out

    @property
    def exit_code(self) -> int:
        """8 (``StaleDataError``) when the data is stale, else 1 when a date failed, else 0."""
        if self.freshness.stale:
            return StaleDataError.exit_code
        return 1 if self.failed else 0


def run_daily(
    run: Run,
    options: RunOptions,
    *,
    thresholds: Thresholds | None = None,
    name: str = ROLLING_NAME,
    rebuild: Rebuild | None = None,
    endpoint_url: str | None = None,
    on_predicted: Callable[[DateResult], None] | None = None,
    on_scored: Callable[[DateOutcome], None] | None = None,
) -> DailyResult:
    """Freshness, predict the new dates, score them into the history (module doc).

    ``options`` are tthf-run's (its ``dates`` is replaced by ``new``; ``as_of`` None is now;
    ``max_missing`` sets when the data is stale);
    ``name`` is the evaluation the history records under; ``on_predicted`` / ``on_scored`` see
    each date as it is done.
    """
    as_of = local_time(options.as_of, run.config.calendar)
    options = dataclasses.replace(options, dates=NEW, as_of=as_of)
    data = open_store(options.data_root or run.config.data_root, endpoint_url=endpoint_url)
    fresh = check_freshness(
        list_dates(data), source=data.uri(), as_of=as_of, calendar=run.config.calendar, max_missing=options.max_missing
    )
    summary = run_inference(run, options, rebuild=rebuild, endpoint_url=endpoint_url, on_date=on_predicted)
    failed = {r.date: r.reason for r in summary.by_status("failed")}
    rolling = evaluate_rolling(run, NEW, data=data, name=name, thresholds=thresholds, failed=failed, on_date=on_scored)
    return DailyResult(fresh, summary, rolling)

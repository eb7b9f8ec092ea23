"""``tthf-eval --rolling``: score dates as ``evaluate_run`` does, then add them to the run's rolling record.

The call's dates are scored into ``evaluation/<name>/`` (default ``rolling``: the folder holds
the latest call's report), each becomes its row of ``evaluation/history.parquet``
(``history``), and the history page and Prometheus file are redrawn from the whole record
(``history_report``). ``--dates new`` here means the dates predicted successfully (in
``inference/manifest.json``) that the record has not scored with the same prediction
settings, so a scheduled call scores each date once, and again only when it was predicted
again with other settings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from tthf.engine.data.dates import NEW
from tthf.engine.evaluation import history_report
from tthf.engine.evaluation.evaluate import DateOutcome, EvalResult, evaluate_run
from tthf.engine.evaluation.history import (
    Thresholds,
    alerts,
    failed_row,
    merge,
    read_history,
    scored_row,
    write_history,
)
from tthf.engine.inference_manifest import RunManifest
from tthf.engine.runs import Run
from tthf.engine.store import Store

#: the evaluation a rolling call records under unless named
ROLLING_NAME = "rolling"


@dataclass
class RollingResult:
    """One rolling call: its evaluation (None when nothing was scored), the dates it recorded, the alerts."""

    name: str
    evaluation: EvalResult | None
    recorded: dict[str, str]  # date -> status written to the history
    history: pl.DataFrame
    alerts: dict[str, list[dt.date]]
    files: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when a date failed (to predict or to score), else 0."""
        return 1 if "failed" in self.recorded.values() else 0


def new_dates(run: Run, name: str = ROLLING_NAME) -> list[dt.date]:
    """Dates predicted ``ok`` that the history has not scored under ``name`` with the same settings key."""
    manifest = RunManifest.load(run)
    if manifest is None:
        return []
    done = read_history(run).filter((pl.col("evaluation") == name) & (pl.col("status") == "scored"))
    seen = set(zip(done["date"].to_list(), done["settings"].to_list(), strict=True))
    ok = [(dt.date.fromisoformat(d), e.settings) for d, e in manifest.dates.items() if e.status == "ok"]
    return sorted(day for day, key in ok if (day, key) not in seen)


def evaluate_rolling(
    run: Run,
    dates: str,
    *,
    data: Store | str | None = None,
    name: str | None = None,
    thresholds: Thresholds | None = None,
    failed: dict[str, str] | None = None,
    endpoint_url: str | None = None,
    on_start: Callable[[int], None] | None = None,
    on_date: Callable[[DateOutcome], None] | None = None,
) -> RollingResult:
    """Score ``dates`` (a ``--dates`` spec, ``new`` included) and record them in the run's history.

    ``failed`` maps dates whose prediction failed to the reason (tthf-daily passes them): they are
    recorded as failed. With nothing to score and nothing failed the history is left as it is.
    ``thresholds``: the alert levels to record (default: none watched).
    """
    name = name or ROLLING_NAME
    thresholds = thresholds or Thresholds()
    spec = ",".join(str(d) for d in new_dates(run, name)) if dates.strip() == NEW else dates
    result = None
    if spec:
        result = evaluate_run(
            run, spec, data=data, name=name, endpoint_url=endpoint_url, on_start=on_start, on_date=on_date
        )
    rows = _rows(run, result, name, thresholds, failed or {})
    history = read_history(run)
    if not rows:
        return RollingResult(name, result, {}, history, alerts(history, name, thresholds))
    history = merge(history, rows)
    write_history(run, history)
    warned = alerts(history, name, thresholds)
    files = history_report.write(run, history, name, warned)
    return RollingResult(name, result, {str(r["date"]): r["status"] for r in rows}, history, warned, files)


def _rows(run: Run, result: EvalResult | None, name: str, thresholds: Thresholds, failed: dict[str, str]) -> list[dict]:
    """The history rows of a call: each scored or failed date of ``result``, then the prediction failures."""
    manifest = RunManifest.load(run)
    settings = {d: e.settings for d, e in manifest.dates.items()} if manifest else {}
    rows = [
        failed_row(day, evaluation=name, reason=reason, settings=settings.get(day, ""), thresholds=thresholds)
        for day, reason in failed.items()
    ]
    if result is None:
        return rows
    band = {head: result.metrics[head].get("kind") == "band" for head in ("ret_conf", "vol_conf")}
    for per_date in result.metrics["per_date"]:
        day = per_date["date"]
        rows.append(
            scored_row(per_date, evaluation=name, settings=settings.get(day, ""), band=band, thresholds=thresholds)
        )
    for outcome in result.by_status("failed"):
        day = outcome.date
        rows.append(
            failed_row(
                day, evaluation=name, reason=outcome.reason, settings=settings.get(day, ""), thresholds=thresholds
            )
        )
    return rows

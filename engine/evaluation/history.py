"""``evaluation/history.parquet``: a run's rolling record, one row per date and evaluation.

Each ``tthf-eval --rolling`` (and ``tthf-daily``) call turns every date it scored, or failed
to score, into one row of headline numbers: ret IC and rank IC, hit rate, vol QLIKE next to
the best baseline on the same cells, the confidence coverage gaps (band confidences only),
rows, status, the prediction settings key and the thresholds of the call. Rows are keyed by
``(date, evaluation)``: rerunning a date replaces its row, so the record never holds a date
twice. A date whose prediction failed is recorded too (``status`` ``failed``, the reason), so
the gap is visible and ``--dates new`` does it again once it is predicted.

``Thresholds`` are the user's alert levels (tthf-eval options, recorded in every row a call
writes); ``alerts`` says which of them the last ``dates`` scored dates all breached.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from tthf.engine.runs import HISTORY, Run
from tthf.errors import KeyNotFoundError, RunFormatError, UsageError

#: the headline numbers, in the page's and the Prometheus file's order
NUMBERS = (
    "ret_ic",
    "ret_rank_ic",
    "hit_rate",
    "vol_qlike",
    "baseline_qlike",
    "qlike_excess",
    "ret_coverage_gap",
    "vol_coverage_gap",
)
SCHEMA: dict[str, Any] = {
    "date": pl.Date,
    "evaluation": pl.String,
    "status": pl.String,  # scored, or failed (predicting or scoring the date), with ``reason``
    "reason": pl.String,
    "rows": pl.Int64,
    "forecasts": pl.Int64,
    "ret_ic": pl.Float64,
    "ret_rank_ic": pl.Float64,
    "hit_rate": pl.Float64,
    "vol_qlike": pl.Float64,  # the model on every scored cell
    "best_baseline": pl.String,
    "model_qlike_paired": pl.Float64,  # the model on the best baseline's cells
    "baseline_qlike": pl.Float64,
    "qlike_excess": pl.Float64,  # model minus best baseline on the same cells: above 0, the baseline wins
    "ret_coverage_gap": pl.Float64,  # realized coverage minus mean stated confidence (band kinds only)
    "vol_coverage_gap": pl.Float64,
    "settings": pl.String,  # the prediction settings key (inference/manifest.json) the date was scored at
    "scored_at": pl.Datetime("us", "UTC"),
    "min_ic": pl.Float64,  # the thresholds of the call that wrote the row
    "max_qlike_excess": pl.Float64,
    "max_coverage_gap": pl.Float64,
    "alert_dates": pl.Int64,
}
_KEY = ("date", "evaluation")


@dataclass(frozen=True)
class Thresholds:
    """Alert levels; None is not watched. A breach on each of the last ``dates`` scored dates is an alert."""

    min_ic: float | None = None  # ret IC below it
    max_qlike_excess: float | None = None  # model QLIKE above the best baseline's by more than it
    max_coverage_gap: float | None = None  # |coverage - stated confidence| above it, either head
    dates: int = 5

    def __post_init__(self) -> None:
        if self.dates < 1:
            raise UsageError(f"--alert-dates must be >= 1, got {self.dates}")
        if self.max_coverage_gap is not None and self.max_coverage_gap < 0:
            raise UsageError(f"--max-coverage-gap must be >= 0, got {self.max_coverage_gap}")

    def breaches(self, row: dict[str, Any]) -> dict[str, bool]:
        """Which watched numbers of one scored row are on the wrong side of their level (a missing number is not)."""

        def beyond(value: Any, level: float | None, above: bool) -> bool | None:
            if level is None:
                return None
            if value is None or not math.isfinite(value):
                return False
            return value > level if above else value < level

        gaps = [row.get("ret_coverage_gap"), row.get("vol_coverage_gap")]
        worst_gap = max((abs(g) for g in gaps if g is not None and math.isfinite(g)), default=None)
        out = {
            "ret_ic": beyond(row.get("ret_ic"), self.min_ic, above=False),
            "qlike_excess": beyond(row.get("qlike_excess"), self.max_qlike_excess, above=True),
            "coverage_gap": beyond(worst_gap, self.max_coverage_gap, above=True),
        }
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Thresholds:
        """The thresholds a history row recorded."""
        return cls(row["min_ic"], row["max_qlike_excess"], row["max_coverage_gap"], row["alert_dates"])


def alerts(history: pl.DataFrame, evaluation: str, thresholds: Thresholds) -> dict[str, list[dt.date]]:
    """Per watched number: the last ``thresholds.dates`` scored dates of ``evaluation`` when all breach it."""
    scored = history.filter((pl.col("evaluation") == evaluation) & (pl.col("status") == "scored")).sort("date")
    last = scored.tail(thresholds.dates).to_dicts()
    if len(last) < thresholds.dates:
        return {}
    flags = [thresholds.breaches(r) for r in last]
    return {k: [r["date"] for r in last] for k in flags[0] if all(f[k] for f in flags)}


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def read_history(run: Run) -> pl.DataFrame:
    """The run's history (empty when it has none); a file that does not read is a ``RunFormatError``."""
    try:
        data = run.read_bytes(HISTORY)
    except KeyNotFoundError:
        return empty()
    try:
        frame = pl.read_parquet(io.BytesIO(data))
        return frame.select([pl.col(c).cast(t) for c, t in SCHEMA.items()])
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise RunFormatError(
            f"{run.store.uri(HISTORY)} is not a readable history ({exc}); move it away and rerun "
            "tthf-eval --rolling over the dates to rebuild it"
        ) from exc


def merge(history: pl.DataFrame, rows: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """``history`` with ``rows`` in, each replacing the row of its (date, evaluation); sorted."""
    new = pl.DataFrame(list(rows), schema=SCHEMA)
    kept = history.join(new.select(_KEY), on=list(_KEY), how="anti")
    return pl.concat([kept, new]).sort(list(_KEY))


def write_history(run: Run, history: pl.DataFrame) -> None:
    buf = io.BytesIO()
    history.write_parquet(buf)
    run.write_bytes(HISTORY, buf.getvalue())


def scored_row(
    per_date: dict[str, Any], *, evaluation: str, settings: str, band: dict[str, bool], thresholds: Thresholds
) -> dict[str, Any]:
    """The history row of a scored date from its metrics.json ``per_date`` row.

    ``band`` says per confidence head (``ret_conf``, ``vol_conf``) whether it states a probability;
    a score kind has no coverage gap.
    """
    best, paired = _best_baseline(per_date.get("vol_qlike_paired", {}))
    return {
        **_base(per_date["date"], evaluation, "scored", "", settings, thresholds),
        "rows": per_date["rows"],
        "forecasts": per_date["forecasts"],
        "ret_ic": per_date["ic"],
        "ret_rank_ic": per_date["rank_ic"],
        "hit_rate": per_date["hit_rate"],
        "vol_qlike": per_date["vol_qlike"],
        "best_baseline": best,
        "model_qlike_paired": paired.get("model"),
        "baseline_qlike": paired.get("baseline"),
        "qlike_excess": _minus(paired.get("model"), paired.get("baseline")),
        "ret_coverage_gap": _minus(per_date["ret_coverage"], per_date["ret_mean_conf"]) if band["ret_conf"] else None,
        "vol_coverage_gap": _minus(per_date["vol_coverage"], per_date["vol_mean_conf"]) if band["vol_conf"] else None,
    }


def failed_row(day: str, *, evaluation: str, reason: str, settings: str, thresholds: Thresholds) -> dict[str, Any]:
    """The history row of a date that could not be predicted or scored."""
    return _base(day, evaluation, "failed", reason, settings, thresholds)


def _base(day: str, evaluation: str, status: str, reason: str, settings: str, thresholds: Thresholds) -> dict:
    levels = asdict(thresholds)
    return {
        "date": dt.date.fromisoformat(day),
        "evaluation": evaluation,
        "status": status,
        "reason": reason,
        "settings": settings,
        "scored_at": dt.datetime.now(dt.timezone.utc),
        "min_ic": levels["min_ic"],
        "max_qlike_excess": levels["max_qlike_excess"],
        "max_coverage_gap": levels["max_coverage_gap"],
        "alert_dates": levels["dates"],
    }


def _best_baseline(paired: dict[str, dict[str, Any]]) -> tuple[str | None, dict[str, Any]]:
    """The baseline with the lowest QLIKE on its cells, and its pair; none when no baseline has cells."""
    scored = {k: v for k, v in paired.items() if v["n"] and v["baseline"] is not None}
    if not scored:
        return None, {}
    best = min(scored, key=lambda k: scored[k]["baseline"])
    return best, scored[best]


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b

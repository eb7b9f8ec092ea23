"""``tthf-eval``'s library function: score a run's prediction files against what happened.

Per selected date (in date order): read ``{run}/inference/YYYY-MM-DD.csv|parquet`` (or those of a
named prediction set, ``inference/NAME/``),
compute the realized targets from the raw data with training's label code
(``realized``), put forecasts, targets and baselines on one grid (``panel``) and reduce
it to its scores (``panel_scores``). A date without a predictions file, or without raw data,
is reported and skipped; a date whose files cannot be read is reported with the reason.
Then the dates are pooled and ``{run}/evaluation/<name>/`` gets metrics.json,
report.html and the figures as PNG files (local or S3, each write atomic).

Memory: one date's grids at a time plus 44 bytes per forecast kept for pooling; pooling
peaks at about 300 bytes per forecast (docs/evaluation.md, "Memory and time").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

import tthf
from tthf.engine.config import FeatureFiles
from tthf.engine.data.dates import parse_dates
from tthf.engine.data.featurefiles import list_feature_dates
from tthf.engine.data.marketdata import list_dates
from tthf.engine.evaluation import explain_report, report
from tthf.engine.evaluation.baselines import SAME_MINUTE_DAYS
from tthf.engine.evaluation.panel import build_panel
from tthf.engine.evaluation.panel_scores import (
    Bands,
    DateScores,
    compare_with_training,
    ranking_only,
    score_date,
    summarize,
)
from tthf.engine.evaluation.realized import RealizedDay, label_source, realized
from tthf.engine.inference_manifest import RunManifest
from tthf.engine.model.network import vol_floor
from tthf.engine.predictions import FORMATS, decode
from tthf.engine.runs import (
    DEFAULT_PREDICTIONS,
    EVALUATION_DIR,
    METRICS,
    Run,
    open_run,
    output_key,
    parse_output_key,
    predictions_dir,
)
from tthf.engine.store import Store, open_store
from tthf.errors import DataError, KeyNotFoundError, StoreError, UsageError

log = logging.getLogger("tthf.eval")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class DateOutcome:
    """What happened to one requested date: ``scored``, ``no_predictions``, ``no_data`` or ``failed``."""

    date: str
    status: str
    reason: str = ""
    rows: int = 0
    forecasts: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    run: Run
    name: str
    uri: str  # the evaluation folder
    metrics: dict[str, Any]
    outcomes: list[DateOutcome]
    files: list[str]
    seconds: float

    def by_status(self, status: str) -> list[DateOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def exit_code(self) -> int:
        """1 when a date failed; dates without predictions or data are reported, not failures."""
        return 1 if self.by_status("failed") else 0


def default_name(dates: str, predictions: str = DEFAULT_PREDICTIONS) -> str:
    """The evaluation's folder name from its dates spec: ``2024-02-07:2024-02-13`` -> ``2024-02-07_to_2024-02-13``,
    with ``_NAME`` after it for a named prediction set."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", dates.strip().replace(":", "_to_")).strip("_.-") or "eval"
    return name if predictions == DEFAULT_PREDICTIONS else f"{name}_{predictions}"


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"invalid --name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def prediction_formats(run: Run, predictions: str = DEFAULT_PREDICTIONS) -> dict[dt.date, str]:
    """The format of each date's predictions file in the run's prediction set; with both, the last one written.

    tthf-run records its latest format in the set's manifest; without a manifest CSV wins.
    The file is ``runs.output_key(day, fmt, predictions)``.
    """
    found: dict[dt.date, list[str]] = {}
    for key in run.store.list(predictions_dir(predictions)):
        parsed = parse_output_key(key, predictions)
        if parsed is not None and parsed[1] in FORMATS:
            found.setdefault(parsed[0], []).append(parsed[1])
    manifest = RunManifest.load(run, predictions)
    latest = manifest.settings.format if manifest else "csv"
    return {day: latest if latest in fmts else fmts[0] for day, fmts in found.items()}


class _Realized:
    """Realized days by date, built once; keeps the last ``SAME_MINUTE_DAYS`` for the same-minute baseline."""

    def __init__(self, root: Store, available: list[dt.date], calendar: str, files: FeatureFiles | None) -> None:
        self.root = root
        self.calendar = calendar
        self.files = files  # labels from these feature files, else from the raw bars under root
        self.available = sorted(available)
        self.cache: dict[dt.date, RealizedDay | None] = {}

    def day(self, day: dt.date) -> RealizedDay:
        if self.cache.get(day) is None:
            self.cache[day] = self._load(day)
        return self.cache[day]  # type: ignore[return-value]

    def _load(self, day: dt.date) -> RealizedDay:
        return realized(self.root, day, self.calendar, self.files)

    def history(self, day: dt.date) -> list[tuple[list[str], Any]]:
        """``(symbols, vol_10m labels)`` of the previous dates with data; unreadable ones are skipped."""
        before = [d for d in self.available if d < day][-SAME_MINUTE_DAYS:]
        for old in [d for d in self.cache if d not in before and d != day]:
            del self.cache[old]
        out = []
        for prev in before:
            if prev not in self.cache:
                try:
                    self.cache[prev] = self._load(prev)
                except DataError as exc:
                    log.warning("%s: not used for the same-minute baseline: %s", prev, exc)
                    self.cache[prev] = None
            past = self.cache[prev]
            if past is not None:
                out.append((past.symbols, past.vol))
        return out


def evaluate(
    store: Store | str,
    run_name: str,
    dates: str,
    *,
    experiment: str | None = None,
    model_type: str | None = None,
    data: str | None = None,
    name: str | None = None,
    predictions: str = DEFAULT_PREDICTIONS,
    endpoint_url: str | None = None,
    on_start: Callable[[int], None] | None = None,
    on_date: Callable[[DateOutcome], None] | None = None,
) -> EvalResult:
    """Find the run ``run_name`` in ``store`` (a unique prefix is enough) and evaluate it (``evaluate_run``)."""
    run = open_run(store, run_name, experiment=experiment, model_type=model_type, endpoint_url=endpoint_url)
    return evaluate_run(
        run,
        dates,
        data=data,
        name=name,
        predictions=predictions,
        endpoint_url=endpoint_url,
        on_start=on_start,
        on_date=on_date,
    )


def evaluate_run(
    run: Run,
    dates: str,
    *,
    data: Store | str | None = None,
    name: str | None = None,
    predictions: str = DEFAULT_PREDICTIONS,
    endpoint_url: str | None = None,
    on_start: Callable[[int], None] | None = None,
    on_date: Callable[[DateOutcome], None] | None = None,
    explain: Callable[[list[str]], dict[str, Any]] | None = None,
) -> EvalResult:
    """Score the run's predictions of ``dates`` (a ``--dates`` spec) and write ``{run}/evaluation/<name>/``.

    ``data`` is the raw-data root, opened (tthf-eval opens it) or a URI opened with
    ``endpoint_url`` (default: the run's training data root); ``name`` the folder (default:
    from the spec and the set); ``predictions`` the prediction set scored. ``on_start(n)`` gets the number
    of requested dates, ``on_date`` each date's outcome as soon as it is known. ``explain`` (``tthf-eval
    --explain``: ``tthf.engine.explain.section``) maps the scored dates to metrics.json's ``explain`` section.
    Raises ``StoreError`` when no
    selected date has a predictions file.
    """
    started = time.perf_counter()
    name = _check_name(name or default_name(dates, predictions))
    root = data if isinstance(data, Store) else open_store(data or run.config.data_root, endpoint_url=endpoint_url)
    root, files = label_source(run.config, root)  # labels from the feature files ([labels]) or the raw bars
    available = list_feature_dates(root, files) if files else list_dates(root)
    selection = parse_dates(dates, available, source=root.uri(), calendar=run.config.calendar)
    formats = prediction_formats(run, predictions)
    cfg = run.config.model
    bands = Bands(cfg.ret_band, cfg.vol_band, vol_floor(cfg))
    if on_start:
        on_start(len(selection.dates) + len(selection.missing))
    outcomes = [
        DateOutcome(d.isoformat(), "no_data", reason=f"no raw data under {root.uri()}") for d in selection.missing
    ]
    for outcome in outcomes:
        if on_date:
            on_date(outcome)
    realized = _Realized(root, available, run.config.calendar, files)
    days: list[DateScores] = []
    for day in selection.dates:
        outcome, scored = _score_day(run, day, formats.get(day), realized, bands, predictions)
        if scored is not None:
            days.append(scored)
        outcomes.append(outcome)
        if on_date:
            on_date(outcome)
    failed = [o for o in outcomes if o.status == "failed"]
    if not days and failed:
        raise StoreError(
            f"no date of --dates {dates!r} could be scored: {len(failed)} failed, e.g. {failed[0].date}: "
            f"{failed[0].reason}"
        )
    if not days:
        raise StoreError(
            f"no predictions to score for --dates {dates!r} in {run.store.uri(predictions_dir(predictions))}; "
            f"write them first with tthf-run --run {run.ref.run_id} --dates {dates} --predictions {predictions}"
        )
    outcomes.sort(key=lambda o: o.date)
    metrics = {**_metrics(run, name, dates, root, outcomes, days, bands), "predictions": predictions}
    if explain is not None:
        metrics["explain"] = explain(metrics["dates"]["scored"])
    metrics["seconds"] = round(time.perf_counter() - started, 2)  # reading and scoring; the report is drawn next
    folder = run.store.child(f"{EVALUATION_DIR}/{name}")
    written = _write(folder, metrics)
    return EvalResult(run, name, folder.uri(), metrics, outcomes, written, time.perf_counter() - started)


def _score_day(
    run: Run, day: dt.date, fmt: str | None, realized: _Realized, bands: Bands, predictions: str
) -> tuple[DateOutcome, DateScores | None]:
    iso = day.isoformat()
    if fmt is None:
        where = run.store.uri(predictions_dir(predictions))
        return DateOutcome(iso, "no_predictions", reason=f"no predictions file in {where}"), None
    key = output_key(day, fmt, predictions)
    try:
        frame = decode(run.read_bytes(key), fmt)
        real = realized.day(day)
        scored = score_date(build_panel(frame, real, realized.history(day)), bands)
    except (DataError, StoreError) as exc:
        reason = " ".join(str(exc).split())
        log.warning("%s failed: %s", iso, reason)
        return DateOutcome(iso, "failed", reason=reason), None
    except pl.exceptions.PolarsError as exc:  # a predictions file that does not decode
        reason = f"{run.store.uri(key)} is not a readable predictions file ({exc}); rerun tthf-run with --overwrite"
        return DateOutcome(iso, "failed", reason=" ".join(reason.split())), None
    row = scored.row
    return DateOutcome(iso, "scored", rows=row["rows"], forecasts=row["forecasts"], warnings=row["warnings"]), scored


def _metrics(
    run: Run, name: str, spec: str, root: Store, outcomes: list[DateOutcome], days: list[DateScores], bands: Bands
) -> dict[str, Any]:
    summary = summarize(days, bands)
    kinds = run.config.imported.confidence if run.config.imported is not None else {}
    for head in ("ret_conf", "vol_conf"):
        summary[head] = ranking_only(summary[head]) if kinds.get(head) == "score" else {**summary[head], "kind": "band"}
    scored = [d.date for d in days]
    try:
        test = json.loads(run.read_text(METRICS)).get("test")
    except (KeyNotFoundError, json.JSONDecodeError):
        test = None
    return {
        "run": run.ref.name,
        "run_uri": run.ref.uri,
        "name": name,
        "data_root": root.uri(),
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tthf_version": tthf.__version__,
        "bands": {"ret_band": bands.ret_band, "vol_band": bands.vol_band, "vol_floor": bands.vol_floor},
        "dates": {
            "spec": spec,
            "scored": scored,
            "no_predictions": [o.date for o in outcomes if o.status == "no_predictions"],
            "no_data": [o.date for o in outcomes if o.status == "no_data"],
            "failed": {o.date: o.reason for o in outcomes if o.status == "failed"},
        },
        **summary,
        "training_check": compare_with_training(test, summary["pooled"], scored) if test else None,
    }


def _write(folder: Store, metrics: dict[str, Any]) -> list[str]:
    """Figures, the page and metrics.json into the evaluation folder; files of an earlier one are removed."""
    pngs = {**report.figures(metrics), **explain_report.figures(metrics)}
    outputs = {
        **pngs,
        "report.html": report.render_html(metrics, pngs, explain_report.section(metrics, pngs)).encode("utf-8"),
        "metrics.json": (json.dumps(metrics, indent=1, sort_keys=True) + "\n").encode("utf-8"),
    }
    for key, data in outputs.items():
        folder.write_bytes(key, data)
    for key in folder.list(""):
        if key not in outputs:
            folder.delete(key)
    return [folder.uri(key) for key in outputs]

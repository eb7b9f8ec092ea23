"""``tthf-eval``: score a run's predictions against what happened and write a report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tthf.cli._common import (
    DATES_HELP,
    Progress,
    add_alert_options,
    add_data_option,
    add_dates_option,
    add_endpoint_option,
    add_logging_option,
    add_run_options,
    command_parser,
    open_data_from_args,
    open_run_from_args,
    run_cli,
    thresholds_from_args,
)
from tthf.cli._report import eval_date_line, format_comparison, format_rolling, format_summary
from tthf.engine.runs import DEFAULT_PREDICTIONS
from tthf.errors import UsageError

if TYPE_CHECKING:
    from tthf.engine.runs import Run
    from tthf.engine.store import Store

EPILOG = f"""\
{DATES_HELP}
The realized targets are computed from the raw data (--data, default: the run's training
data root) by the same code as training's labels.
Dates without a predictions file or without raw data are reported and skipped; sparse
predictions are scored once per forecast, at their source_ts.
Writes {{run}}/evaluation/<name>/: metrics.json, report.html (self-contained) and the figures
as PNG files. docs/evaluation.md explains every number.
--rolling also records each scored date in {{run}}/evaluation/history.parquet (one row per
date and evaluation, replaced on rerun) and redraws evaluation/history.html and
evaluation/metrics.prom (Prometheus text) from the whole record; the folder name defaults to
"rolling". With --rolling, --dates new scores the dates predicted since the last call.
The thresholds mark an alert when each of the last --alert-dates dates breaches them
(docs/operations.md).
--explain adds "What the model looks at" (permutation importance of features, families and
lags, the network's attention) to both, on a sample of each date's forecasts.
--predictions NAME scores the prediction set tthf-run --predictions NAME wrote; --compare OTHER
also scores set OTHER on the same dates and writes their comparison (every score's difference,
per-output max and p99 row differences, rows in one set only) to <name>_vs_OTHER/.
Exit code: 0 when every date with predictions was scored, 1 if one failed, 2+ on usage,
data or store errors (4: no predictions at all for the dates).
"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(
        "tthf-eval",
        "Score a run's ret_1h, vol_10m and confidence forecasts against the realized values, each "
        "next to naive baselines, and write a report a researcher can show their team.",
        EPILOG,
    )
    add_run_options(p)
    add_dates_option(p, "score")
    add_data_option(p, of_run=True)
    p.add_argument(
        "--name",
        default=None,
        help="evaluation folder name under {run}/evaluation/ (default: from --dates, e.g. 2024-02_to_2024-03)",
    )
    _add_rolling_options(p.add_argument_group("rolling record (--rolling)"))
    explain = p.add_argument_group("explanation (--explain)")
    explain.add_argument(
        "--explain", action="store_true", help="add feature, family and lag importance and attention to the report"
    )
    explain.add_argument(
        "--explain-minute-step", type=int, default=10, metavar="N", help="use every N-th forecast minute (default 10)"
    )
    explain.add_argument(
        "--explain-symbols", type=int, default=None, metavar="N", help="use a random N of the symbols (default: all)"
    )
    p.add_argument(
        "--predictions",
        default=DEFAULT_PREDICTIONS,
        metavar="NAME",
        help="the prediction set to score (tthf-run --predictions NAME; default: %(default)s, inference/ itself)",
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="OTHER",
        help="also score prediction set OTHER on the same dates and write both side by side "
        "(docs/evaluation.md, 'Comparing prediction sets')",
    )
    add_endpoint_option(p)
    add_logging_option(p)
    return p


def _add_rolling_options(p: argparse._ArgumentGroup) -> None:
    """``--rolling`` and the alert thresholds it records."""
    p.add_argument("--rolling", action="store_true", help="add the scored dates to the run's rolling history")
    add_alert_options(p)


def _explainer(args: argparse.Namespace, run: Run, data: Store) -> Callable[[list[str]], dict[str, Any]] | None:
    """--explain's section of the evaluation, with its own progress bar (one step per permutation pass)."""
    if not args.explain:
        return None
    from tthf.engine.explain.samples import Sampling
    from tthf.engine.explain.section import ItemDone, explain_dates

    sampling = Sampling(minute_step=args.explain_minute_step, max_symbols=args.explain_symbols)

    def explain(dates: list[str]) -> dict[str, Any]:
        with Progress[ItemDone]("explain", "pass", count=("windows", lambda done: done.windows)) as bar:
            return explain_dates(run, data, dates, sampling, on_start=bar.start, on_step=bar.step)

    return explain


def _refuse_combinations(args: argparse.Namespace) -> None:
    """The options that write different things: --rolling (the default set's history), --compare, --explain."""
    if args.rolling and (args.explain or args.compare is not None or args.predictions != DEFAULT_PREDICTIONS):
        raise UsageError(
            "--rolling records the default prediction set's history on its own: run --explain, --compare "
            "and --predictions in a separate tthf-eval call"
        )
    if args.explain and args.compare is not None:
        raise UsageError("--explain explains one prediction set: run it without --compare")


def body(args: argparse.Namespace) -> int:
    from tthf.engine.data.dates import NEW
    from tthf.engine.evaluation.compare import compare_run
    from tthf.engine.evaluation.evaluate import evaluate_run

    _refuse_combinations(args)
    run = open_run_from_args(args)
    data = open_data_from_args(args, run)
    if args.rolling:
        return _rolling(args, run, data)
    if args.dates.strip() == NEW:
        raise UsageError("--dates new scores the dates the rolling history lacks: add --rolling")
    with Progress(
        "dates",
        "date",
        line=eval_date_line,
        notable=lambda outcome: outcome.status != "scored" or bool(outcome.warnings),
    ) as bar:
        common = {"data": data, "name": args.name, "on_start": bar.start, "on_date": bar.step}
        if args.compare is not None:
            compared = compare_run(run, args.dates, args.predictions, args.compare, **common)
            summary, code = format_comparison(compared), compared.exit_code
        else:
            explain = _explainer(args, run, data)
            result = evaluate_run(run, args.dates, predictions=args.predictions, explain=explain, **common)
            summary, code = format_summary(result), result.exit_code
    print(summary)
    return code


def _rolling(args: argparse.Namespace, run: Run, data: Store) -> int:
    from tthf.engine.evaluation.rolling import evaluate_rolling

    with Progress(
        "dates", "date", line=eval_date_line, notable=lambda o: o.status != "scored" or bool(o.warnings)
    ) as bar:
        result = evaluate_rolling(
            run,
            args.dates,
            data=data,
            name=args.name,
            thresholds=thresholds_from_args(args),
            on_start=bar.start,
            on_date=bar.step,
        )
    print(format_rolling(result))
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-eval", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""``tthf-eval``: score a run's predictions against what happened and write a report."""

from __future__ import annotations

import argparse
import sys

from tthf.cli._common import (
    DATES_HELP,
    Progress,
    add_data_option,
    add_dates_option,
    add_endpoint_option,
    add_logging_option,
    add_run_options,
    command_parser,
    open_data_from_args,
    open_run_from_args,
    run_cli,
)
from tthf.cli._report import eval_date_line, format_comparison, format_summary
from tthf.engine.runs import DEFAULT_PREDICTIONS

EPILOG = f"""\
{DATES_HELP}
The realized targets are computed from the raw data (--data, default: the run's training
data root) by the same code as training's labels.
Dates without a predictions file or without raw data are reported and skipped; sparse
predictions are scored once per forecast, at their source_ts.
Writes {{run}}/evaluation/<name>/: metrics.json, report.html (self-contained) and the figures
as PNG files. docs/evaluation.md explains every number.
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


def body(args: argparse.Namespace) -> int:
    from tthf.engine.evaluation.compare import compare_run
    from tthf.engine.evaluation.evaluate import evaluate_run

    run = open_run_from_args(args)
    data = open_data_from_args(args, run)
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
            result = evaluate_run(run, args.dates, predictions=args.predictions, **common)
            summary, code = format_summary(result), result.exit_code
    print(summary)
    return code


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-eval", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

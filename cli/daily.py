"""``tthf-daily``: freshness, predict the new dates, score them into the rolling record; one summary."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tthf.cli._common import (
    Progress,
    add_alert_options,
    add_as_of_option,
    add_data_option,
    add_endpoint_option,
    add_logging_option,
    add_run_options,
    command_parser,
    open_run_from_args,
    run_cli,
    thresholds_from_args,
)
from tthf.cli._report import eval_date_line, few_dates, format_rolling, run_date_line
from tthf.engine.predictions import FORMATS
from tthf.engine.runtime.backends import BACKENDS

if TYPE_CHECKING:
    from tthf.engine.daily import DailyResult

EPILOG = """\
Meant for a scheduler after each close (docs/operations.md: a systemd timer, a scheduled CI
workflow). In order:
  1. freshness: the newest trading date with data against the sessions completed at --as-of
     (default now), as tthf-check --freshness;
  2. tthf-run --dates new: every completed session with data not yet predicted with the same
     settings (today's, gaps filled late, dates that failed before);
  3. tthf-eval --rolling --dates new: the dates predicted and not yet in
     {run}/evaluation/history.parquet; dates whose prediction failed are recorded as failed.
A second call with nothing new predicts and scores nothing.
Exit code: 0 when all is well, 8 when the data is stale (the rest still runs), 1 when a date
failed to predict or score, 2+ on usage, data, store or backend errors.

example:
  tthf-daily --run jennifer --store s3://bucket/runs --min-ic 0 --alert-dates 5
"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("tthf-daily", "Predict and score whatever closed since the last call.", EPILOG)
    add_run_options(p)
    add_data_option(p, of_run=True)
    add_as_of_option(p)
    p.add_argument(
        "--max-missing",
        type=int,
        default=0,
        help="completed sessions that may lack data before it is stale (default: %(default)s)",
    )
    p.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="inference backend, as tthf-run's (default: %(default)s)"
    )
    p.add_argument(
        "--format", dest="fmt", default="csv", choices=FORMATS, help="predictions format, as tthf-run's (default: csv)"
    )
    p.add_argument("--dense", action="store_true", help="predict every minute, as tthf-run --dense")
    add_alert_options(p.add_argument_group("alerts of the rolling record"))
    add_endpoint_option(p)
    add_logging_option(p)
    return p


def format_daily(result: DailyResult) -> str:
    """One summary: freshness, what was predicted, what the history recorded, what needs attention."""
    inf = result.inference
    ok, failed, missing = (inf.by_status(s) for s in ("ok", "failed", "no_data"))
    lines = [
        result.freshness.message(),
        f"predicted: {few_dates(result.predicted) or 'nothing new'}"
        + (f"; {len(failed)} failed" if failed else "")
        + (f"; {len(missing)} without data" if missing else ""),
        format_rolling(result.rolling),
    ]
    lines += [f"FAILED {day}: {reason}" for day, reason in result.failed.items()]
    verdict = {0: "ok", 1: "a date failed", 8: "STALE data"}[result.exit_code]
    lines.append(f"tthf-daily: {verdict} (exit {result.exit_code}); {len(ok)} predicted")
    return "\n".join(lines)


def body(args: argparse.Namespace) -> int:
    from tthf.engine.daily import run_daily
    from tthf.engine.data.freshness import parse_as_of
    from tthf.engine.runtime.options import RunOptions
    from tthf.export.api import rebuild_engine

    options = RunOptions(
        dates="new",
        backend=args.backend,
        fmt=args.fmt,
        dense=args.dense,
        data_root=args.data,
        as_of=None if args.as_of is None else parse_as_of(args.as_of),
        max_missing=args.max_missing,
    )
    with (
        Progress("dates", "date", line=run_date_line) as predicted,
        Progress("scored", "date", line=eval_date_line) as scored,
    ):
        result = run_daily(
            open_run_from_args(args),
            options,
            thresholds=thresholds_from_args(args),
            rebuild=rebuild_engine,
            endpoint_url=args.s3_endpoint_url,
            on_predicted=predicted.step,
            on_scored=scored.step,
        )
    print(format_daily(result))
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-daily", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

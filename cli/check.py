"""``tthf-check``: what tthf-run would make of each date of a data root, without a model."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable

from tthf.cli._common import (
    DATA_ENV,
    DATES_HELP,
    DEFAULT_DATA,
    add_as_of_option,
    add_calendar_option,
    add_data_option,
    add_dates_option,
    add_endpoint_option,
    add_json_option,
    add_logging_option,
    add_store_option,
    command_parser,
    open_data_from_args,
    open_run_from_args,
    progress,
    run_cli,
)
from tthf.engine.config import SEQ_LEN
from tthf.engine.features.check import CheckReport, DateCheck

EPILOG = f"""\
For every selected date: readable or not (and why), rows, symbols, session coverage (the
share of symbol-minutes with a usable quote: tthf-run's mask), the dense windows tthf-run
--dense would predict, the rows each cleaning rule touched, the symbols that would get no
prediction, with the reason, and warnings (bars that look stamped with their minute's end).
The same reading and cleaning code as tthf-train and tthf-run decides all of it
(docs/data.md, "Checking a data root").

With --run NAME (and --store), the dates are checked as that run reads them: its window
length and calendar, and for an imported run with feature files its own sources (the
feature files, and raw bars for its computed features): rows, symbols, coverage (the share
of session cells with a row), null values per column and the windows after its fill rule.

{DATES_HELP}
Trading days without data are listed as no_data.
--freshness compares the newest trading date with data with the last session completed at
--as-of (default now; a session is complete once its close has passed) and says "stale",
naming the sessions without data, when more than --max-missing of them lack it (default 0).
With --freshness, --dates is optional.
Exit code: 0 when every date with data is readable, 3 when one is not (4 when reading the
store failed), 8 when --freshness finds the data stale, 2 on usage errors.

example:
  tthf-check data/market --dates 2024-03
  tthf-check s3://bucket/market --dates 2024 --json > check.json
  tthf-check s3://bucket/market --freshness --max-missing 1
  tthf-check --run jennifer --store s3://bucket/runs --dates 2024-03
"""

#: the summary lists at most this many left-out symbols per date (--json has them all)
_SHOW_LEFT_OUT = 10


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("tthf-check", "Report what tthf-run would make of each date of a raw data root.", EPILOG)
    add_data_option(p, "data")
    add_dates_option(p, "check", required=False)
    p.add_argument(
        "--seq-len",
        type=int,
        default=SEQ_LEN,
        help="window length in minutes that a prediction needs (default: %(default)s, the model default)",
    )
    fresh = p.add_argument_group("freshness")
    fresh.add_argument(
        "--freshness", action="store_true", help="check that every completed session has data (see below)"
    )
    fresh.add_argument(
        "--max-missing",
        type=int,
        default=0,
        help="completed sessions that may lack data before it is stale (default: %(default)s)",
    )
    add_as_of_option(fresh)
    p.add_argument("--run", default=None, help="check the dates as this run reads them (its own sources)")
    add_store_option(p)
    p.add_argument("--experiment", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-type", default=None, help=argparse.SUPPRESS)
    add_json_option(p)
    add_calendar_option(p)
    add_endpoint_option(p)
    add_logging_option(p)
    return p


def _row(d: DateCheck) -> str:
    if d.status != "ok":
        return f"{d.date}  {d.status:<7}  {d.reason}"
    return (
        f"{d.date}  {d.status:<7}  {d.rows:>10,}  {d.symbols:>7,}  {len(d.left_out):>8,}  "
        f"{100 * d.coverage:>7.2f}%  {d.windows:>11,}  {d.seconds:>6.2f}s"
    )


def format_report(report: CheckReport) -> str:
    """The summary table: one line per date, the rows per rule over all dates, the left-out symbols."""
    header = (
        f"{'date':<10}  {'status':<7}  {'rows':>10}  {'symbols':>7}  {'left out':>8}  {'coverage':>8}  "
        f"{'windows':>11}  {'time':>7}"
    )
    lines = [f"data {report.data_root}  dates {report.spec}  window {report.seq_len} minutes", "", header]
    lines += [_row(d) for d in report.dates]
    ok, failed, missing = (report.by_status(s) for s in ("ok", "failed", "no_data"))
    totals = report.totals()
    if totals:
        lines += ["", "rows (or symbols, cells) per cleaning rule, all readable dates:"]
        affected = {k: sum(1 for d in ok if d.counts.get(k)) for k in totals}
        lines += [f"  {k:<24} {v:>12,}  on {affected[k]} date(s)" for k, v in totals.items()]
    left = [(d.date, s, why) for d in ok for s, why in list(d.left_out.items())[:_SHOW_LEFT_OUT]]
    if left:
        lines += ["", "symbols left out (no prediction):"]
        lines += [f"  {day}  {symbol:<8} {why}" for day, symbol, why in left]
        more = sum(max(0, len(d.left_out) - _SHOW_LEFT_OUT) for d in ok)
        if more:
            lines.append(f"  ... and {more} more (see --json)")
    per_date = report.seconds / max(1, len(ok + failed))
    lines += [
        "",
        (
            f"dates: {len(ok)} ok, {len(failed)} unreadable, {len(missing)} without data; "
            f"{report.seconds:.1f}s ({per_date:.2f}s per date)"
        ),
    ]
    lines += [f"UNREADABLE {d.date}: {d.reason}" for d in failed]
    lines += [f"WARNING {d.date}: {w}" for d in ok for w in d.warnings]
    nulls = {k: sum(d.nulls.get(k, 0) for d in ok) for d in ok for k in d.nulls}
    if any(nulls.values()):
        lines += ["", "null values per feature-file column, all readable dates:"]
        lines += [f"  {k:<24} {v:>12,}" for k, v in nulls.items() if v]
    return "\n".join(lines)


def body(args: argparse.Namespace) -> int:
    from tthf.engine.data.freshness import check_freshness, parse_as_of
    from tthf.engine.data.marketdata import list_dates
    from tthf.errors import StaleDataError, UsageError

    if args.dates is None and not args.freshness:
        raise UsageError("tthf-check needs --dates (which dates to check), --freshness, or both")
    out: dict = {}
    codes = []
    if args.freshness:
        data = open_data_from_args(args)
        when = None if args.as_of is None else parse_as_of(args.as_of)
        fresh = check_freshness(
            list_dates(data), source=data.uri(), as_of=when, calendar=args.calendar, max_missing=args.max_missing
        )
        out["freshness"] = fresh.to_dict()
        codes.append(StaleDataError.exit_code if fresh.stale else 0)
        if not args.json:
            print(fresh.message())
    if args.dates is not None:
        report = _check_dates(args)
        out.update(report.to_dict())
        codes.append(report.exit_code)
        if not args.json:
            print(format_report(report))
    if args.json:
        print(json.dumps(out, indent=1))
    return max(codes)


def _check_dates(args: argparse.Namespace) -> CheckReport:
    """The dates as a run reads them (``--run``: its own sources) or as a data root holds them."""
    from tthf.engine.features.check import check_data, check_run
    from tthf.engine.store import open_store

    def wrap(days: list) -> Iterable:
        return progress(days, "check", len(days), "date")

    if args.run is None:
        return check_data(
            open_data_from_args(args), args.dates, seq_len=args.seq_len, calendar=args.calendar, wrap=wrap
        )
    run = open_run_from_args(args)
    given = args.data != os.environ.get(DATA_ENV, DEFAULT_DATA)  # else the run's own raw root
    data = args.data if given else None
    store = open_store(data or run.config.data_root, endpoint_url=args.s3_endpoint_url)
    return check_run(run.config, store, args.dates, wrap=wrap, endpoint_url=args.s3_endpoint_url)


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-check", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""``tthf-feed``: replay a day of a data root into a tthf-serve, keep what comes back, print the latency."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from tthf.cli._common import (
    add_endpoint_option,
    add_logging_option,
    add_store_option,
    command_parser,
    open_data_from_args,
    open_run_from_args,
    run_cli,
)
from tthf.cli.serve import TOKEN_ENV, token_from_args
from tthf.errors import UsageError

EPILOG = f"""\
With --run NAME (and --store) instead of DATA it replays the run's own inputs: for a run that
reads feature files, the day's feature rows (the files' symbol and ts columns and the run's
columns) as feature-schema batches (docs/serving.md, "Feature-file runs").
Sends the day's rows minute by minute, each minute closed by its last batch (the rows before
the session's first minute go with it, those after the last with the last), at --speed (60x:
a minute a second; max: as fast as the server answers, --in-flight minutes ahead). Every
reply (the minutes, the revisions, the hello's outputs after a reconnect) goes to --out
(Parquet: the predictions file's columns plus `kind` and `reply`); the day's outputs are
each (ts, symbol)'s last row there (tthf.engine.serving.protocol.final_outputs).
A broken connection or a `retry` refusal is reopened for up to --reconnect seconds and the
feed resumes from the minute the server holds. Token: --token-file or ${TOKEN_ENV}.
Exit code: 0 when every minute was answered, 1 when the server could not apply a call (its error is
printed), 8 when the server refused or was unreachable.
"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("tthf-feed", "Replay a day into tthf-serve and measure it.", EPILOG)
    p.add_argument("data", metavar="DATA", nargs="?", default=None, help="data root to replay (folder or s3://...)")
    p.add_argument("--run", default=None, help="replay this run's own inputs instead of DATA (its feature files)")
    add_store_option(p)
    p.add_argument("--experiment", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-type", default=None, help=argparse.SUPPRESS)
    p.add_argument("--date", required=True, type=dt.date.fromisoformat, help="the day to replay (YYYY-MM-DD)")
    p.add_argument("--to", required=True, help="server address, e.g. grpc://127.0.0.1:8815 (grpc+tls:// for TLS)")
    p.add_argument("--speed", default="max", help="60x (one minute a second), 390x, ... or max (default: max)")
    p.add_argument("--in-flight", type=int, default=1, help="minutes sent ahead of the replies (default: 1)")
    p.add_argument("--out", type=Path, default=None, help="Parquet file of every reply row received")
    p.add_argument("--calendar", default=None, help="exchange calendar of the day's session (default: XNYS)")
    p.add_argument("--token-file", type=Path, default=None, help=f"file holding the bearer token (or ${TOKEN_ENV})")
    p.add_argument("--tls-root", type=Path, default=None, help="PEM root certificate to trust (grpc+tls://)")
    p.add_argument("--reconnect", type=float, default=60.0, help="seconds to keep reconnecting (default: 60)")
    p.add_argument("--timeout", type=float, default=3600.0, help="deadline of one connection, seconds")
    p.add_argument("--json", action="store_true", help="print the latency summary as JSON")
    add_endpoint_option(p)
    add_logging_option(p)
    p.set_defaults(data_dest="data")
    return p


def speed_from_arg(text: str) -> float | None:
    """``60x`` -> 60.0, ``max`` -> None."""
    if text == "max":
        return None
    try:
        value = float(text.rstrip("x"))
    except ValueError:
        value = 0.0
    if value <= 0:
        raise UsageError(f"--speed {text}: give a positive factor such as 60x, or max")
    return value


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        from tthf.engine.config import DEFAULT_CALENDAR
        from tthf.engine.serving.client import Feeder, feed_day, feed_run

        if (args.data is None) == (args.run is None):
            raise UsageError("give DATA (a data root of raw bars) or --run NAME (the run's own inputs), one of them")
        if args.run is not None:
            calls = feed_run(open_run_from_args(args), args.date, endpoint_url=args.s3_endpoint_url)
        else:
            calls = feed_day(open_data_from_args(args), args.date, args.calendar or DEFAULT_CALENDAR)
        feeder = Feeder(
            args.to,
            args.date,
            calls,
            token=token_from_args(args),
            tls_root=args.tls_root.read_bytes() if args.tls_root else None,
            speed=speed_from_arg(args.speed),
            in_flight=args.in_flight,
            deadline_s=args.timeout,
            reconnect_s=args.reconnect,
        )
        report = feeder.run()
        if args.out is not None:
            report.received.write_parquet(args.out)
        summary = report.summary() | {"rows_received": report.received.height, "seconds": round(report.seconds, 2)}
        print(json.dumps(summary) if args.json else _lines(summary), flush=True)
        return 1 if summary["errors"] else 0

    return run_cli("tthf-feed", body, build_parser(), argv)


def _lines(summary: dict) -> str:
    out = [f"tthf-feed: {summary['calls']} minutes answered in {summary['seconds']} s, "
           f"{summary['rows_received']} rows received, {summary['connects']} connection(s), "
           f"{summary['refusals']} refusal(s)"]  # fmt: skip
    out += [f"  call failed: {error}" for error in summary["errors"]]
    for name in ("round_trip_ms", "server_ms", "transport_ms"):
        if name in summary:
            q = summary[name]
            out.append(
                f"  {name:<14} p50 {q['p50']:8.2f}  p95 {q['p95']:8.2f}  p99 {q['p99']:8.2f}  max {q['max']:8.2f}"
            )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

"""``tthf-serve``: a run's live predictions over Arrow Flight, with health, metrics and a live page over HTTP."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from tthf.cli._common import (
    _exit_now,
    add_endpoint_option,
    add_logging_option,
    add_run_options,
    command_parser,
    run_cli,
)
from tthf.engine.runtime.backends import BACKENDS
from tthf.errors import UsageError

TOKEN_ENV = "TTHF_SERVE_TOKEN"

EPILOG = f"""\
One process per run serves one trading day at a time (docs/serving.md). A feeding client
(tthf-feed, or any Arrow Flight client) opens DoExchange and sends raw-schema batches, each
minute closed by its `final` batch (or, for today, by the clock at its end + --grace);
every closed minute and every revision comes back with its metadata. DoGet streams the
replies to any number of subscribers. HTTP: /v2/health/live, /v2/health/ready, /metrics
and the live page at /.
Every accepted call is journaled (fsync'd) under --journal; a restart replays it and tells
the reconnecting client the last minute it holds. At SIGTERM: not ready at once, the queue
drains within --drain seconds, then the process exits.
Security: binds 127.0.0.1 unless --host says otherwise. The bearer token comes from
${TOKEN_ENV} or --token-file (never the command line, where `ps` shows it) and is never
logged; --tls-cert/--tls-key turn TLS on for both ports.
Exit code: 0 after a clean drain, 1 if the ports had to be closed by force, 2+ on errors.
"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("tthf-serve", "Serve a run's predictions live, minute by minute.", EPILOG)
    add_run_options(p)
    p.add_argument("--journal", default="./journal", help="folder of the day journals (default: %(default)s)")
    p.add_argument("--day", type=dt.date.fromisoformat, default=None, help="day to serve (default: today's session)")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend (default: %(default)s)")
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind both ports to (default: %(default)s)")
    net.add_argument("--port", type=int, default=8815, help="Arrow Flight port (default: %(default)s)")
    net.add_argument("--http-port", type=int, default=8816, help="HTTP port (default: %(default)s)")
    net.add_argument("--token-file", type=Path, default=None, help=f"file holding the bearer token (or ${TOKEN_ENV})")
    net.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate: TLS on both ports")
    net.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    load = p.add_argument_group("load and time")
    load.add_argument("--queue", type=int, default=64, help="input queue bound, in calls (default: %(default)s)")
    load.add_argument("--grace", type=float, default=2.0, help="seconds after a minute's end the clock closes it")
    load.add_argument("--no-clock", action="store_true", help="only the feeder's final batches close minutes")
    load.add_argument("--drain", type=float, default=10.0, help="seconds to drain at SIGTERM (default: %(default)s)")
    add_endpoint_option(p)
    add_logging_option(p)
    return p


def token_from_args(args: argparse.Namespace) -> str | None:
    """The bearer token: --token-file's first line, else $TTHF_SERVE_TOKEN, else none."""
    if args.token_file is not None:
        try:
            return args.token_file.read_text().strip() or None
        except OSError as exc:
            raise UsageError(f"--token-file {args.token_file}: {exc.strerror}") from exc
    return os.environ.get(TOKEN_ENV) or None


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        from tthf.cli._common import open_store_from_args
        from tthf.engine.serving.server import ServeOptions, serve
        from tthf.export.api import rebuild_engine

        if bool(args.tls_cert) != bool(args.tls_key):
            raise UsageError("give both --tls-cert and --tls-key, or neither")
        options = ServeOptions(
            journal=args.journal,
            day=args.day,
            host=args.host,
            port=args.port,
            http_port=args.http_port,
            backend=args.backend,
            queue=args.queue,
            grace_s=None if args.no_clock else args.grace,
            drain_s=args.drain,
            token=token_from_args(args),
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
        summary = serve(open_store_from_args(args), args.run, options, rebuild=rebuild_engine,
                        on_ready=lambda address: print(f"tthf-serve: ready on {address}", flush=True))  # fmt: skip
        print(
            f"tthf-serve: {summary.run} ({summary.backend}) served {summary.day} for {summary.served_s:.1f} s; "
            f"ready after {summary.ready_s:.2f} s; {'drained' if summary.drained else 'queue NOT drained'}",
            flush=True,
        )
        if summary.forced:
            _exit_now(1)  # a connection held a port open: the journal has every accepted call
        return 0

    return run_cli("tthf-serve", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

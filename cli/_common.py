"""What every console script shares: one-line errors with exit codes, logging, progress."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from tthf.engine.store import ENDPOINT_ENV
from tthf.errors import TthfError

T = TypeVar("T")
log = logging.getLogger("tthf")

STORE_ENV, DATA_ENV = "TTHF_STORE", "TTHF_DATA"
DEFAULT_STORE, DEFAULT_DATA = "./runs", "./data/market"


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store``: the run store, from $TTHF_STORE or ./runs."""
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV, DEFAULT_STORE),
        help=f"run store, a folder or s3://bucket/prefix (default: ${STORE_ENV} or {DEFAULT_STORE})",
    )


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--run`` (an id or a unique prefix), ``--store`` and the optional search scope, alike in every command."""
    parser.add_argument("--run", required=True, help="run id or a unique prefix of one (e.g. jennifer)")
    add_store_option(parser)
    parser.add_argument("--experiment", default=None, help="restrict the run search to one experiment (default: all)")
    parser.add_argument("--model-type", default=None, help="restrict the run search to one model type (default: all)")


def add_data_root_option(parser: argparse.ArgumentParser, flag: str = "--data") -> None:
    """The raw-data root, from $TTHF_DATA or ./data/market (``tthf-synth`` calls it ``--out``)."""
    parser.add_argument(
        flag,
        default=os.environ.get(DATA_ENV, DEFAULT_DATA),
        help=f"data root, a folder or s3://bucket/prefix (default: ${DATA_ENV} or {DEFAULT_DATA})",
    )


def add_calendar_option(parser: argparse.ArgumentParser) -> None:
    """``--calendar``: the exchange whose sessions define a trading day (a run records its own)."""
    from tthf.engine.config import DEFAULT_CALENDAR

    parser.add_argument(
        "--calendar",
        default=DEFAULT_CALENDAR,
        help="exchange calendar, an ISO MIC code from exchange_calendars such as XNYS or XLON (default: %(default)s)",
    )


def add_endpoint_option(parser: argparse.ArgumentParser) -> None:
    """``--s3-endpoint-url``: an S3-compatible server; credentials always come from boto3's chain."""
    parser.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get(ENDPOINT_ENV),
        help=f"S3 endpoint for s3:// paths (default: ${ENDPOINT_ENV} or AWS's)",
    )


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_cli(
    prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> int:
    """Parse ``argv``, call ``body`` and turn ``TthfError`` into one line and its exit code."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        return int(body(args) or 0)
    except TthfError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        _exit_now(130)


def _exit_now(code: int) -> NoReturn:
    """End the process without unwinding the threads still running a stage.

    A stage thread may be inside a backend's native code (OpenVINO, ONNX Runtime) when Ctrl-C
    arrives; at interpreter exit Python would cancel it there, and the C++ runtime aborts
    ("FATAL: exception not rethrown", exit -6). Nothing is lost by skipping that exit: every
    output and the manifest are written atomically and each finished date is already recorded.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """A progress bar on a terminal, nothing extra otherwise (callers log per item)."""
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit=unit, dynamic_ncols=True, file=sys.stderr)


class ProgressBar:
    """A tqdm bar on a terminal; one log line per step otherwise (logs, CI)."""

    def __init__(self, total: int, desc: str, unit: str = "it") -> None:
        self.desc = desc
        self.bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)

    def update(self, message: str = "") -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(message)
            self.bar.update(1)
        else:
            log.info("%s: %s", self.desc, message)

    def write(self, line: str) -> None:
        """A line above the bar (or on stderr without one)."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

"""What every console script shares: its shape, the common options, errors and exit codes, logging, progress.

Every command has one shape (after CTranslate2's ``declare_arguments`` + ``convert_from_args``):
``build_parser`` declares its options, the ones several commands take through the ``add_*``
functions here; ``body`` opens what it needs through one ``open_*_from_args`` helper, calls one
library function and prints its summary; ``main`` hands both to ``run_cli``, which turns a
``TthfError`` into one line and its exit code.

Progress: a command's library call reports its steps (a date predicted, a file read, a day
written) through a callback, or the command wraps its list; ``Progress`` shows them the
same way in every command. On a terminal a tqdm bar shows steps done, total, rate and ETA,
with the latest step's line (or a throughput such as windows/s) beside it and the notable
steps (a failure, a warning) written above it. Anywhere else (a log file, CI, a pipe) a
bar would be a stream of carriage returns, so each step's line is printed instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TextIO, TypeVar

from tthf.engine.store import ENDPOINT_ENV, Store, open_store
from tthf.errors import TthfError

if TYPE_CHECKING:  # the run module pulls in numpy and the config; --help stays fast without it
    from tthf.engine.evaluation.history import Thresholds
    from tthf.engine.runs import Run

T = TypeVar("T")

STORE_ENV, DATA_ENV = "TTHF_STORE", "TTHF_DATA"
DEFAULT_STORE, DEFAULT_DATA = "./runs", "./data/market"


#: the ``--dates`` grammar, the first paragraph of each epilog of a command that takes ``--dates``
DATES_HELP = """\
dates: a year (2024), a month (2024-03), a day (2024-03-05), an inclusive range of any of
those (2024-01:2024-03) or a comma list (2024-03-05,2024-03-07); latest: the newest trading
date with data."""


def command_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A command's parser; an epilog (lists, examples) keeps its own line breaks, and so does the description then."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
    )


def add_dates_option(parser: argparse.ArgumentParser, verb: str, *, required: bool = True) -> None:
    """``--dates SPEC`` (the grammar is ``DATES_HELP``, in the epilog)."""
    parser.add_argument("--dates", required=required, help=f"which dates to {verb} (see below)")


def add_as_of_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--as-of``: the time that decides which sessions have closed (freshness, ``--dates new``)."""
    parser.add_argument(
        "--as-of",
        default=None,
        help="the time to judge freshness at: ISO, the exchange's local time unless it has an offset "
        "(default: now; a session counts once its close has passed)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: the command's whole report as JSON on stdout instead of its summary."""
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON instead of the summary")


def add_logging_option(parser: argparse.ArgumentParser) -> None:
    """``-v``: debug logging (``run_cli`` sets the level)."""
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


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


def add_data_option(parser: argparse.ArgumentParser, flag: str = "--data", *, of_run: bool = False) -> None:
    """The raw-data root, with the one default rule of every command (README, "One rule for the data root's default").

    A command that works on a trained run (``of_run``: tthf-run, tthf-export, tthf-eval) reads
    the data root the run records in its config.json: the run's scalers were fitted on that
    data and tthf-run's settings key names it, so an environment variable must not swap it
    silently. Every other command (tthf-train, tthf-check, and tthf-synth and tthf-ingest,
    which call it ``--out``) reads or writes $TTHF_DATA, else ./data/market. ``flag`` without
    dashes is an optional positional argument (tthf-check's ``DATA``).
    """
    default = None if of_run else os.environ.get(DATA_ENV, DEFAULT_DATA)
    source = "the data root recorded in the run's config.json" if of_run else f"${DATA_ENV}, else {DEFAULT_DATA}"
    role = "data root to write" if flag == "--out" else "data root"
    text = f"{role}: a folder or s3://bucket/prefix (default: {source})"
    if flag.startswith("-"):
        parser.add_argument(flag, default=default, help=text)
    else:
        parser.add_argument(flag, nargs="?", default=default, help=text)
    parser.set_defaults(data_dest=flag.lstrip("-"))


def add_calendar_option(parser: argparse.ArgumentParser) -> None:
    """``--calendar``: the exchange whose sessions define a trading day (a run records its own)."""
    from tthf.engine.config import DEFAULT_CALENDAR

    parser.add_argument(
        "--calendar",
        default=DEFAULT_CALENDAR,
        help="exchange calendar, an ISO MIC code from exchange_calendars such as XNYS or XLON (default: %(default)s)",
    )


def add_alert_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The rolling record's alert thresholds (tthf-eval --rolling, tthf-daily; ``thresholds_from_args``)."""
    parser.add_argument("--min-ic", type=float, default=None, help="alert when the ret IC is below this (default: off)")
    parser.add_argument(
        "--max-qlike-excess",
        type=float,
        default=None,
        help="alert when the vol QLIKE exceeds the best baseline's by more than this (default: off)",
    )
    parser.add_argument(
        "--max-coverage-gap",
        type=float,
        default=None,
        help="alert when |coverage - stated confidence| of either confidence exceeds this (default: off)",
    )
    parser.add_argument(
        "--alert-dates", type=int, default=5, help="dates in a row that must breach for an alert (default: %(default)s)"
    )


def thresholds_from_args(args: argparse.Namespace) -> Thresholds:
    """The alert levels of ``add_alert_options``."""
    from tthf.engine.evaluation.history import Thresholds

    return Thresholds(args.min_ic, args.max_qlike_excess, args.max_coverage_gap, args.alert_dates)


def add_endpoint_option(parser: argparse.ArgumentParser) -> None:
    """``--s3-endpoint-url``: an S3-compatible server; credentials always come from boto3's chain."""
    parser.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get(ENDPOINT_ENV),
        help=f"S3 endpoint for s3:// paths (default: ${ENDPOINT_ENV} or AWS's)",
    )


def open_store_from_args(args: argparse.Namespace) -> Store:
    """The run store of ``--store`` (``add_store_option``), through ``--s3-endpoint-url``."""
    return open_store(args.store, endpoint_url=args.s3_endpoint_url)


def open_run_from_args(args: argparse.Namespace) -> Run:
    """The run that ``add_run_options`` names: ``--run`` (a unique prefix is enough) in ``--store``."""
    from tthf.engine.runs import open_run

    return open_run(open_store_from_args(args), args.run, experiment=args.experiment, model_type=args.model_type)


def open_data_from_args(args: argparse.Namespace, run: Run | None = None) -> Store:
    """The data root of ``add_data_option``: the one given, else (a run's command) the one ``run`` records."""
    uri = getattr(args, args.data_dest)
    if uri is None and run is not None:
        uri = run.config.data_root
    return open_store(uri, endpoint_url=args.s3_endpoint_url)


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


class Progress(Generic[T]):
    """Progress over the steps of one command, each step described by an item of type ``T``.

    ``line(item)`` is the step's line (none: nothing printed per step, e.g. when the library
    logs its own); ``notable(item)`` marks the steps written above the bar too; ``count`` =
    (unit, how many of them a step did) shows their rate beside the bar instead of the latest
    line (``("windows", ...)`` -> ``12,345 windows/s``).
    """

    def __init__(
        self,
        desc: str,
        unit: str,
        *,
        line: Callable[[T], str] | None = None,
        notable: Callable[[T], bool] | None = None,
        count: tuple[str, Callable[[T], int]] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.desc, self.unit = desc, unit
        self.line, self.notable, self.count = line, notable, count
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.counted = 0
        self.started = time.perf_counter()

    def start(self, total: int | None) -> None:
        """The number of steps is known: the clock starts and, on a terminal, the bar appears."""
        self.started = time.perf_counter()
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, dynamic_ncols=True, file=self.stream)

    def step(self, item: T) -> None:
        """One step is done."""
        text = self.line(item) if self.line else ""
        if self.count:
            self.counted += self.count[1](item)
        if self.bar is None:
            if text:
                print(text, file=self.stream)
            return
        self.bar.set_postfix_str(self._postfix(text), refresh=False)
        self.bar.update(1)
        if text and self.notable and self.notable(item):
            self.bar.write(text, file=self.stream)

    def over(self, items: Iterable[T], total: int | None = None) -> Iterator[T]:
        """``items`` one by one, each counted as a step once the caller asks for the next one."""
        self.start(total)
        try:
            for item in items:
                yield item
                self.step(item)
        finally:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _postfix(self, text: str) -> str:
        if self.count is None:
            return text.split("\n", 1)[0]
        rate = self.counted / max(time.perf_counter() - self.started, 1e-9)
        return f"{rate:,.0f} {self.count[0]}/s"


def progress(items: Iterable[T], desc: str, total: int | None, unit: str) -> Iterable[T]:
    """``Progress.over`` in the shape the ingest library takes (``tthf.engine.data.ingest.Progress``)."""
    return Progress[T](desc, unit).over(items, total)

"""What every console script shares: one-line errors with exit codes, logging, progress."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

from tthf.errors import TthfError

T = TypeVar("T")
log = logging.getLogger("tthf")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_cli(prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
            argv: list[str] | None = None) -> int:
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
        return 130


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """A progress bar on a terminal, nothing extra otherwise (callers log per item)."""
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit=unit, dynamic_ncols=True, file=sys.stderr)

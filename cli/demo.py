"""``tthf-demo``: the quick start's main job on a generated market, in one command."""

from __future__ import annotations

import argparse
import sys

from tthf.cli._common import add_logging_option, command_parser, run_cli
from tthf.cli._report import format_metrics, format_summary, print_summary


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(
        "tthf-demo",
        "Generate a small synthetic market (100 symbols, Jan-Feb 2024) under WORKDIR/data/market, "
        "train the run 'jennifer' into WORKDIR/runs, export and validate it, write dense "
        "predictions for its held-out dates and score them in a report (tthf-eval). Steps whose "
        "output exists are reused.",
    )
    p.add_argument("--workdir", default=".", help="where data/ and runs/ go (default: the current folder)")
    p.add_argument("--backend", default="auto", help="inference backend (default: auto, the fastest available)")
    add_logging_option(p)
    return p


def body(args: argparse.Namespace) -> int:
    from tthf.demo import run_demo

    result = run_demo(args.workdir, backend=args.backend)
    print(format_metrics(result.metrics))
    print(f"\nexport: {result.export_message}")
    print_summary(result.inference)
    print(f"\n{format_summary(result.evaluation)}")
    print(f"\nmarket: {result.data_root}\nrun:    {result.run.ref.uri}")
    return result.inference.exit_code or result.evaluation.exit_code


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-demo", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

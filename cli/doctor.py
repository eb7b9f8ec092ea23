"""``tthf-doctor``: what this host can run, each mismatch with its fix, and a verdict as the exit code."""

from __future__ import annotations

import argparse
import sys

from tthf.cli._common import (
    add_endpoint_option,
    add_json_option,
    add_logging_option,
    add_store_option,
    command_parser,
    open_store_from_args,
    run_cli,
)
from tthf.engine.runtime.backends import BACKENDS
from tthf.engine.runtime.doctor import EXPECT

EPILOG = """\
It reports the CPU and its features (AVX2, AVX-512, AVX512-BF16, AMX), the GPU, its compute
capability and free memory, the driver, torch and its CUDA build, TensorRT, the ONNX Runtime
providers that really ran a session (a tiny real model per provider, so a silent fallback to
the CPU shows), and with --run whether the run's export has an engine for this GPU.
Exit code: 0 when the backend runs on the expected device, 6 when it does not (or cannot
run at all), 2 on usage errors, 4 when the run is not found.
"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("tthf-doctor", "Check what this host can run and say how to fix each mismatch.", EPILOG)
    p.add_argument("--run", default=None, help="also check this run's export (an id or a unique prefix)")
    add_store_option(p)
    add_endpoint_option(p)
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="the backend the verdict is about (default: auto, as tthf-run picks it)",
    )
    p.add_argument(
        "--expect",
        default=None,
        choices=EXPECT,
        help="the device it must run on (default: gpu when a CUDA device is visible, else cpu)",
    )
    add_json_option(p)
    add_logging_option(p)
    return p


def body(args: argparse.Namespace) -> int:
    from tthf.engine.runtime.doctor import diagnose

    store = open_store_from_args(args) if args.run else None
    report = diagnose(args.run, backend=args.backend, expect=args.expect, store=store)
    print(report.to_json() if args.json else report.format())
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-doctor", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

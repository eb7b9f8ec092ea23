"""``tthf-run``: predictions for every selected date of a trained run."""

from __future__ import annotations

import argparse
import sys

from tthf.cli._common import (
    DATES_HELP,
    Progress,
    add_as_of_option,
    add_data_option,
    add_dates_option,
    add_endpoint_option,
    add_logging_option,
    add_run_options,
    command_parser,
    open_run_from_args,
    run_cli,
)
from tthf.cli._report import print_summary, run_date_line
from tthf.engine.data.freshness import parse_as_of
from tthf.engine.predictions import FORMATS
from tthf.engine.runtime.backends import BACKENDS
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import EXECUTORS, HOST_MODES, RayConfig, RunOptions
from tthf.engine.runtime.ray_executor import CPUS_PER_WORKER
from tthf.engine.runtime.runner import WINDOWING

DEFAULTS = RunOptions(dates="")

EPILOG = f"""\
{DATES_HELP} new: every completed session
with data not yet predicted with the same settings (late-filled gaps and earlier failures
included; a session still open waits for its close). latest and new warn when the data is
stale (tthf-check --freshness). Dates without data are reported and skipped. Outputs go to
{{run}}/inference/YYYY-MM-DD.csv (or .parquet) with a manifest (--predictions NAME: the named
set {{run}}/inference/NAME/); a rerun skips dates already done with the same model and
settings. A set holds one precision: a backend of another precision (openvino-bf16,
openvino-int8) is refused on a set that holds fp32 files; give it its own set, e.g.
--predictions int8 (docs/running.md, "Prediction sets and precision").
Dates run as overlapping stages (read, features, predict, encode, write), a few dates in
flight at once; --host-workers N reads and builds the features of N dates at once in N
threads (--host-mode processes: worker processes); predict takes them in date order. A
killed run loses at most the dates in flight, and the rerun completes them. A date that
cannot be read is recorded with its reason and the others go on.
--executor ray runs whole dates on the workers of a Ray cluster (pip install 'tthf[ray]'):
a local cluster sized to this machine, or the one at --ray-address. The files are the same
byte for byte, and a date done by one executor is skipped by the other (docs/running.md).
Exit code: 0 when every date with data was predicted, 1 if any failed, 2+ on usage,
data, store or backend errors.
"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("tthf-run", "Predict ret_1h, vol_10m and their confidences for every stock and minute.", EPILOG)
    add_run_options(p)
    add_dates_option(p, "predict")
    add_data_option(p, of_run=True)
    add_as_of_option(p)
    p.add_argument(
        "--max-missing",
        type=int,
        default=0,
        help="--dates latest|new: completed sessions that may lack data before the warning (default: %(default)s)",
    )
    _add_prediction_options(p.add_argument_group("what to predict and write"))
    _add_pipeline_options(p.add_argument_group("how the dates run"))
    _add_ray_options(p.add_argument_group("Ray cluster (--executor ray)"))
    add_endpoint_option(p)
    add_logging_option(p)
    return p


def _add_prediction_options(p: argparse._ArgumentGroup) -> None:
    """Sampling, backend, batch, output format and which dates to redo or stop at."""
    p.add_argument(
        "--dense",
        action="store_true",
        help="predict every minute (default: every sample_every minutes, forward-filled)",
    )
    p.add_argument(
        "--sample-every", type=int, default=None, help="sparse sampling step in minutes (default: the run's config)"
    )
    p.add_argument(
        "--backend",
        default=DEFAULTS.backend,
        choices=BACKENDS,
        help="auto (default: the fastest available, torch if the run has no export), or one backend",
    )
    p.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, help="windows per inference batch (default: %(default)s)"
    )
    p.add_argument(
        "--format", dest="fmt", default=DEFAULTS.fmt, choices=FORMATS, help="output format (default: %(default)s)"
    )
    p.add_argument(
        "--predictions",
        default=DEFAULTS.predictions,
        metavar="NAME",
        help="the prediction set to write: inference/NAME/ with its own manifest (default: %(default)s, "
        "inference/ itself); tthf-eval --predictions NAME scores it, --compare NAME compares two",
    )
    p.add_argument("--overwrite", action="store_true", help="redo dates that are already done")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed date")


def _add_pipeline_options(p: argparse._ArgumentGroup) -> None:
    """Overlap, windowing, host workers and the executor."""
    p.add_argument(
        "--no-overlap",
        dest="overlap",
        action="store_false",
        help="run the stages (read, features, predict, encode, write) one after another instead of "
        "overlapping them; slower, for measuring the overlap",
    )
    p.add_argument(
        "--windowing",
        default=DEFAULTS.windowing,
        choices=WINDOWING,
        help="GPU only: cut windows on the host and upload them, or upload each day's grid once and cut "
        "on the device (auto: whichever moves fewer bytes; default auto)",
    )
    p.add_argument(
        "--host-workers",
        type=int,
        default=DEFAULTS.host_workers,
        help="--executor local: read and build the features of that many dates at once (default 1; "
        "docs/running.md has the scaling measured)",
    )
    p.add_argument(
        "--host-mode",
        default=DEFAULTS.host_mode,
        choices=HOST_MODES,
        help="how --host-workers N > 1 runs: threads of this process (default; the features kernel and polars "
        "release the GIL) or worker processes (each day's grid is copied back)",
    )
    p.add_argument(
        "--executor",
        default=DEFAULTS.executor,
        choices=EXECUTORS,
        help="local (default: overlapped stages in this process) or ray (whole dates on Ray workers)",
    )


def _add_ray_options(p: argparse._ArgumentGroup) -> None:
    """Where the Ray cluster is and how its workers are sized."""
    p.add_argument(
        "--ray-address",
        default=DEFAULTS.ray.address,
        help="--executor ray: the cluster to join (auto, host:6379 or ray://host:10001; "
        "default: start a local cluster sized to this machine)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULTS.ray.workers,
        help="--executor ray: worker processes (default: one per free GPU with --gpus-per-worker, "
        f"else one per {CPUS_PER_WORKER} free CPUs)",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=DEFAULTS.ray.gpus_per_worker,
        help="--executor ray: GPUs each worker asks for (default: %(default)s, CPU workers)",
    )


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """The library's options from the parsed command line."""
    return RunOptions(
        dates=args.dates,
        dense=args.dense,
        sample_every=args.sample_every,
        backend=args.backend,
        batch_size=args.batch_size,
        fmt=args.fmt,
        overwrite=args.overwrite,
        predictions=args.predictions,
        data_root=args.data,
        fail_fast=args.fail_fast,
        overlap=args.overlap,
        windowing=args.windowing,
        executor=args.executor,
        host_workers=args.host_workers,
        host_mode=args.host_mode,
        ray=RayConfig(address=args.ray_address, workers=args.workers, gpus_per_worker=args.gpus_per_worker),
        as_of=None if args.as_of is None else parse_as_of(args.as_of),
        max_missing=args.max_missing,
    )


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        from tthf.export.api import rebuild_engine

        options = options_from_args(args)
        bar = Progress(
            "dates",
            "date",
            line=run_date_line,
            notable=lambda r: r.status == "failed",
            count=("windows", lambda r: r.windows if r.status == "ok" else 0),
        )
        try:
            summary = run_inference(
                open_run_from_args(args),
                options,
                rebuild=rebuild_engine,
                endpoint_url=args.s3_endpoint_url,
                on_date=bar.step,
                on_start=bar.start,
            )
        finally:
            bar.close()
        print_summary(summary)
        return summary.exit_code

    return run_cli("tthf-run", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

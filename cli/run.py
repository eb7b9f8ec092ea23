"""``tthf-run``: predictions for every selected date of a trained run."""

from __future__ import annotations

import argparse
import os
import sys

from tthf.cli._common import progress, run_cli
from tthf.engine.inference import DateResult, InferenceSummary, RunOptions, run_inference

EPILOG = """\
dates: a year (2024), a month (2024-03), a day (2024-03-05), an inclusive range of any of
those (2024-01:2024-03) or a comma list (2024-03-05,2024-03-07). Dates without data are
reported and skipped. Outputs go to {run}/inference/YYYY-MM-DD.csv (or .parquet) with a
manifest; a rerun skips dates already done with the same model and settings.
Exit code: 0 when every date with data was predicted, 1 if any failed, 2+ on usage,
data, store or backend errors.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tthf-run", description="Predict ret_1h, vol_10m and their confidences for every stock and minute.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, help="run id or a unique prefix of one (e.g. jennifer)")
    p.add_argument("--dates", required=True, help="which dates to predict (see below)")
    p.add_argument("--dense", action="store_true", help="predict every minute (default: every sample_every minutes, forward-filled)")
    p.add_argument("--sample-every", type=int, default=None, help="sparse sampling step in minutes (default: the run's config)")
    p.add_argument("--backend", default="torch", help="torch, onnxruntime, tensorrt or auto (default: torch)")
    p.add_argument("--batch-size", type=int, default=4096, help="windows per inference batch (default: 4096)")
    p.add_argument("--format", dest="fmt", default="csv", choices=("csv", "parquet"), help="output format (default: csv)")
    p.add_argument("--overwrite", action="store_true", help="redo dates that are already done")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed date")
    p.add_argument("--store", default=os.environ.get("TTHF_STORE", "runs"), help="run store: folder or s3://bucket/prefix (env TTHF_STORE; default ./runs)")
    p.add_argument("--data", default=None, help="data root: folder or s3://bucket/prefix (default: the run's training data root)")
    p.add_argument("--experiment", default=None, help="restrict the run search to one experiment")
    p.add_argument("--model-type", default=None, help="restrict the run search to one model type")
    p.add_argument("--s3-endpoint-url", default=None, help="S3-compatible endpoint (env TTHF_S3_ENDPOINT_URL)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _report(result: DateResult) -> None:
    if result.status == "ok":
        s = result.seconds
        print(f"{result.date}  ok       {result.rows:>9,} rows  {result.windows:>9,} windows  {s['total']:6.2f}s", file=sys.stderr)
    else:
        print(f"{result.date}  {result.status:<8} {result.reason}", file=sys.stderr)


def print_summary(summary: InferenceSummary) -> None:
    ok, failed = summary.by_status("ok"), summary.by_status("failed")
    skipped, missing = summary.by_status("skipped"), summary.by_status("no_data")
    stages: dict[str, float] = {}
    for r in ok:
        for k, v in r.seconds.items():
            stages[k] = stages.get(k, 0.0) + v
    rate = summary.windows / summary.seconds if summary.seconds else 0.0
    print(f"\nrun {summary.run}  backend {summary.backend}  stride {summary.stride}")
    print(f"dates: {len(ok)} ok, {len(failed)} failed, {len(skipped)} skipped (already done), {len(missing)} without data")
    print(f"windows: {summary.windows:,} in {summary.seconds:.1f}s ({rate:,.0f} windows/s)")
    if stages:
        print("time per stage: " + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items() if k != "total"))
    for r in failed:
        print(f"FAILED {r.date}: {r.reason}")
    files = [r.file for r in ok + skipped if r.file]
    if files:
        print(f"predictions: {files[0].rsplit('/', 1)[0]}/")


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        if args.s3_endpoint_url:
            os.environ["TTHF_S3_ENDPOINT_URL"] = args.s3_endpoint_url
        options = RunOptions(
            dates=args.dates, dense=args.dense, sample_every=args.sample_every, backend=args.backend,
            batch_size=args.batch_size, fmt=args.fmt, overwrite=args.overwrite, data_root=args.data,
            fail_fast=args.fail_fast,
        )
        summary = run_inference(
            args.store, args.run, options, experiment=args.experiment, model_type=args.model_type,
            on_date=_report, progress=lambda dates: progress(dates, "dates", unit="date"),
        )
        print_summary(summary)
        return summary.exit_code

    return run_cli("tthf-run", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""tthf-train: train the three-headed transformer on a data root and write a run."""

from __future__ import annotations

import argparse
import sys

from tthf.cli._common import (
    add_calendar_option,
    add_data_option,
    add_endpoint_option,
    add_logging_option,
    add_store_option,
    command_parser,
    open_data_from_args,
    open_store_from_args,
    run_cli,
)
from tthf.cli._report import format_metrics
from tthf.engine.runs import DEFAULT_EXPERIMENT


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "tthf-train",
        (
            "Train the three-headed transformer on every date under the data root: time-ordered "
            "train / val / test splits with a purge gap, scalers fitted on the training dates only, "
            "early stopping on the validation loss. Writes config.json, checkpoint.safetensors, "
            "scalers.json and metrics.json (held-out test metrics against naive baselines) to "
            "{store}/{experiment}/three_headed_transformer/{run}/. See docs/model.md."
        ),
    )
    parser.add_argument("--run", required=True, help="run id to create, e.g. jennifer")
    add_data_option(parser)
    add_store_option(parser)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help="most training epochs (default: TrainConfig.epochs)")
    parser.add_argument("--seed", type=int, help="random seed for weights, shuffling and subsampling (default: 0)")
    parser.add_argument("--threads", type=int, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    add_calendar_option(parser)
    add_endpoint_option(parser)
    add_logging_option(parser)
    return parser


def body(args: argparse.Namespace) -> int:
    from tthf.engine.training.train import train_run

    overrides = {k: getattr(args, k) for k in ("epochs", "seed", "threads") if getattr(args, k) is not None}
    result = train_run(
        open_data_from_args(args),
        open_store_from_args(args),
        args.run,
        experiment=args.experiment,
        overrides=overrides,
        overwrite=args.overwrite,
        calendar=args.calendar,
    )
    print(format_metrics(result.metrics))
    print(
        f"run {result.run.ref.name} written to {result.run.ref.uri} in {result.seconds:.0f} s "
        f"(best epoch {result.history.best_epoch} of {len(result.history.epochs)})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-train", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

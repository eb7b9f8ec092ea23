"""tthf-export: checkpoint -> ONNX (fp32, fp16) -> TensorRT engine, each validated against PyTorch."""

from __future__ import annotations

import argparse
import sys

from tthf.cli._common import (
    add_data_option,
    add_endpoint_option,
    add_logging_option,
    add_run_options,
    command_parser,
    open_data_from_args,
    open_run_from_args,
    run_cli,
)
from tthf.export.config import AUTO_PRECISIONS, EXPORTERS, ExportConfig

DESCRIPTION = (
    "Export a run's checkpoint to ONNX (fp32 model.onnx and mixed-precision model_fp16.onnx) and, "
    "on a host with a CUDA GPU and TensorRT, to an fp16 TensorRT engine. Every artifact is compared "
    "with the PyTorch reference on random inputs and on real windows from the run's held-out dates; "
    "a difference beyond the documented tolerance (docs/export.md) fails the export and writes "
    "nothing. Writes {run}/export/ with manifest.json (hashes, versions, validation) and prints "
    "the validation table. Without a GPU the engine is skipped with the reason and the command "
    "that builds it; --require-engine makes that an error."
)
DEFAULTS = ExportConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("tthf-export", DESCRIPTION)
    add_run_options(parser)
    add_data_option(parser, of_run=True)
    parser.add_argument(
        "--require-engine",
        action="store_true",
        help="fail unless the TensorRT engine is built and validated (needs CUDA + tensorrt)",
    )
    _add_onnx_options(parser.add_argument_group("ONNX"))
    _add_engine_options(parser.add_argument_group("TensorRT engine"))
    _add_validation_options(parser.add_argument_group("validation"))
    _add_variant_options(parser.add_argument_group("reduced-precision variants"))
    add_endpoint_option(parser)
    add_logging_option(parser)
    return parser


def _add_variant_options(group: argparse._ArgumentGroup) -> None:
    """The int8 variant: built, validated and recorded only when asked (docs/export.md, "INT8")."""
    group.add_argument(
        "--int8",
        action="store_true",
        help="also quantize model.onnx to int8 (NNCF, OpenVINO IR) on windows of the run's training dates, "
        "validate it and record it as the optional variant openvino-int8 (a rejected variant never fails the export)",
    )
    group.add_argument(
        "--auto-precision",
        choices=AUTO_PRECISIONS,
        default=DEFAULTS.auto_precision,
        help="what tthf-run --backend auto serves on CPU hosts: fp32 (default), or opt in to an accepted reduced "
        "precision (bf16, or int8 with --int8); recorded in the export manifest (docs/export.md, 'What auto serves')",
    )
    group.add_argument(
        "--calibration-windows",
        type=int,
        default=DEFAULTS.calibration_windows,
        help="training-date windows the int8 ranges are calibrated on (default: %(default)s)",
    )
    group.add_argument(
        "--quality-windows",
        type=int,
        default=DEFAULTS.quality_windows,
        help="held-out windows every variant's forecast quality (IC, rank IC, QLIKE, calibration gap) is scored "
        "on against fp32, 0 to skip (default: %(default)s)",
    )


def _add_onnx_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default=DEFAULTS.exporter,
        help="ONNX exporter (default: %(default)s; docs/export.md explains the choice)",
    )
    group.add_argument("--opset", type=int, default=DEFAULTS.opset, help="ONNX opset, >= 17 (default: %(default)s)")


def _add_engine_options(group: argparse._ArgumentGroup) -> None:
    """The batch sizes the engine accepts and is tuned for, and the builder's memory."""
    group.add_argument(
        "--min-batch",
        type=int,
        default=DEFAULTS.min_batch,
        help="smallest batch the engine accepts (default: %(default)s)",
    )
    group.add_argument(
        "--opt-batch",
        type=int,
        action="append",
        dest="opt_batches",
        help="batch the engine is tuned for; repeat for several optimization profiles "
        f"(default: {' and '.join(map(str, DEFAULTS.opt_batches))}: one minute of every symbol, "
        "and the dense runner's batch)",
    )
    group.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULTS.max_batch,
        help="largest batch per engine call; larger batches are split (default: %(default)s)",
    )
    group.add_argument(
        "--workspace-mib",
        type=int,
        default=DEFAULTS.workspace_mib,
        help="TensorRT builder workspace limit in MiB (default: %(default)s)",
    )


def _add_validation_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--real-windows",
        type=int,
        default=DEFAULTS.real_windows,
        help="held-out windows to validate on, 0 to skip (default: %(default)s)",
    )
    group.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of the random validation inputs")


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    """The library's export settings from the parsed command line."""
    return ExportConfig(
        exporter=args.exporter,
        opset=args.opset,
        min_batch=args.min_batch,
        opt_batches=tuple(args.opt_batches or DEFAULTS.opt_batches),
        max_batch=args.max_batch,
        workspace_mib=args.workspace_mib,
        real_windows=args.real_windows,
        seed=args.seed,
        require_engine=args.require_engine,
        int8=args.int8,
        calibration_windows=args.calibration_windows,
        quality_windows=args.quality_windows,
        auto_precision=args.auto_precision,
    )


def body(args: argparse.Namespace) -> int:
    from tthf.engine.runs import EXPORT_DIR
    from tthf.export.api import export_run

    cfg = config_from_args(args)
    run = open_run_from_args(args)
    result = export_run(run, cfg, data=open_data_from_args(args, run))
    print(result.table)
    for note in result.manifest.notes:
        print(f"note: {note}")
    print(result.engine_message)
    if variants := result.variants_line():
        print(variants)
    print(
        f"export of {run.ref.name} written to {run.store.uri(EXPORT_DIR)} "
        f"({len(result.manifest.artifacts)} artifacts, {sum(r.passed for r in result.results)} of "
        f"{len(result.results)} checks passed)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-export", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

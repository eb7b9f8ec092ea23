"""tthf-import: a model trained elsewhere (ONNX, .pt2, or a state dict and its class) becomes a tthf run."""

from __future__ import annotations

import argparse
import sys

from tthf.cli._common import add_endpoint_option, add_store_option, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tthf-import",
        description=(
            "Turn a model trained elsewhere into a tthf run that tthf-export, tthf-run, tthf-eval and the real-time "
            "predictor serve like a trained one. SPEC.toml (docs/import.md) names the model (.onnx, a torch.export "
            ".pt2, or a .safetensors/.pt state dict plus its class), the scalers (.json, .skops, or .joblib/.pkl "
            "with --trust-pickle), which model output and column feeds each of ret_1h, vol_10m, ret_conf, vol_conf "
            "(and their affine maps), the features in the model's order and the raw data's dates. The served "
            "graph is validated against the source model on random and held-out windows before anything is "
            "written. Nothing is unpickled and no user code runs unless the spec names a class or you pass "
            "--trust-pickle."
        ),
    )
    parser.add_argument("--spec", required=True, help="the import spec, a TOML file (docs/import.md)")
    add_store_option(parser)
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow joblib/pickle scalers (unpickling runs code from the file: only for files you trust)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a run of the same name")
    parser.add_argument(
        "--check-golden",
        action="store_true",
        help="only re-run the golden check of the spec's [golden] dates against the run already imported "
        "(tthf's predictions vs the user's, same keys; exit 5 with the table when they differ)",
    )
    add_endpoint_option(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def body(args: argparse.Namespace) -> int:
    from tthf.engine.store import open_store
    from tthf.export.importing import import_run, load_spec, max_abs, recheck_golden

    spec = load_spec(args.spec)
    store = open_store(args.store, endpoint_url=args.s3_endpoint_url)
    if args.check_golden:
        report = recheck_golden(spec, store)
        print(report.table())
        print(f"golden check passed: {len(report.days)} date(s) of run {spec.run_id} reproduce the user's predictions")
        return 0
    result = import_run(spec, store, trust_pickle=args.trust_pickle, overwrite=args.overwrite)
    print(result.table)
    if result.golden is not None:
        print(result.golden.table())
    for note in result.notes:
        print(f"note: {note}")
    worst = ", ".join(f"{k} {v:.2e}" for k, v in sorted(max_abs(result.results).items()))
    print(
        f"imported {spec.model_format} model as run {result.run.ref.name} at {result.run.ref.uri} in "
        f"{result.seconds:.1f} s ({sum(r.passed for r in result.results)} of {len(result.results)} checks passed; "
        f"max |served - source|: {worst}); next: tthf-export --run {spec.run_id} --store {args.store}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-import", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

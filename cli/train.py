"""tthf-train: train the three-headed transformer on a data root and write a run."""

from __future__ import annotations

import argparse
import sys

from tthf.cli._common import add_data_root_option, add_endpoint_option, add_store_option, run_cli
from tthf.engine.runs import DEFAULT_EXPERIMENT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tthf-train",
        description=(
            "Train the three-headed transformer on every date under the data root: time-ordered "
            "train / val / test splits with a purge gap, scalers fitted on the training dates only, "
            "early stopping on the validation loss. Writes config.json, checkpoint.safetensors, "
            "scalers.json and metrics.json (held-out test metrics against naive baselines) to "
            "{store}/{experiment}/three_headed_transformer/{run}/. See docs/model.md."
        ),
    )
    parser.add_argument("--run", required=True, help="run id to create, e.g. jennifer")
    add_data_root_option(parser)
    add_store_option(parser)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help="most training epochs (default: TrainConfig.epochs)")
    parser.add_argument("--seed", type=int, help="random seed for weights, shuffling and subsampling (default: 0)")
    parser.add_argument("--threads", type=int, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    add_endpoint_option(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def format_metrics(metrics: dict) -> str:
    """The held-out table: each head next to its naive baseline, then the confidence checks."""
    test = metrics["test"]
    ret, vol = test["ret_1h"], test["vol_10m"]

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4g}"

    lines = [
        f"held-out test: {len(test['dates'])} dates {test['dates'][0]}..{test['dates'][-1]}, {test['n_windows']} windows",
        f"{'ret_1h':<26}{'model':>12}{'zero':>12}",
        *(f"  {k:<24}{f(ret['model'][k]):>12}{f(ret['baseline_zero'][k]):>12}" for k in ("mse", "mae", "ic", "rank_ic")),
        f"  {'mse skill vs zero':<24}{f(ret['mse_skill']):>12}",
        f"{'vol_10m':<26}{'model':>12}{'last rv':>12}",
        *(f"  {k:<24}{f(vol['model'][k]):>12}{f(vol['baseline_last_rv'][k]):>12}" for k in ("mae", "rmse", "qlike", "corr")),
        f"{'confidence':<26}{'ret_conf':>12}{'vol_conf':>12}",
    ]
    rc, vc = test["ret_conf"], test["vol_conf"]
    for key, label in (("spearman_conf_vs_abs_err", "spearman(conf, |err|)"), ("mean_conf", "mean stated P(in band)"),
                       ("coverage", "share in band"), ("max_quintile_calibration_gap", "max quintile gap")):
        lines.append(f"  {label:<24}{f(rc[key]):>12}{f(vc[key]):>12}")
    for q in range(len(rc["by_quintile"])):
        r, v = rc["by_quintile"][q], vc["by_quintile"][q] if q < len(vc["by_quintile"]) else None
        lines.append(f"  {'|err| conf quintile ' + str(q + 1):<24}{f(r['mean_abs_err']):>12}"
                     f"{f(v['mean_abs_err'] if v else None):>12}")
    return "\n".join(lines)


def body(args: argparse.Namespace) -> int:
    from tthf.engine.training.train import train_run

    overrides = {k: getattr(args, k) for k in ("epochs", "seed", "threads") if getattr(args, k) is not None}
    result = train_run(args.data, args.store, args.run, experiment=args.experiment, overrides=overrides,
                       overwrite=args.overwrite, s3_endpoint_url=args.s3_endpoint_url)
    print(format_metrics(result.metrics))
    print(f"run {result.run.ref.name} written to {result.run.ref.uri} in {result.seconds:.0f} s "
          f"(best epoch {result.history.best_epoch} of {len(result.history.epochs)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-train", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

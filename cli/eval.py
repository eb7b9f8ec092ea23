"""``tthf-eval``: score a run's predictions against what happened and write a report."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from tthf.cli._common import add_endpoint_option, add_store_option, run_cli

if TYPE_CHECKING:  # the library is imported when the command runs, so --help stays fast
    from tthf.engine.evaluation.evaluate import DateOutcome, EvalResult

EPILOG = """\
dates: a year (2024), a month (2024-03), a day (2024-03-05), an inclusive range of any of
those (2024-01:2024-03) or a comma list. The realized targets are computed from the raw data
(--data, default: the run's training data root) by the same code as training's labels.
Dates without a predictions file or without raw data are reported and skipped; sparse
predictions are scored once per forecast, at their source_ts.
Writes {run}/evaluation/<name>/: metrics.json, report.html (self-contained) and the figures
as PNG files. docs/evaluation.md explains every number.
Exit code: 0 when every date with predictions was scored, 1 if one failed, 2+ on usage,
data or store errors (4: no predictions at all for the dates).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tthf-eval", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=("Score a run's ret_1h, vol_10m and confidence forecasts against the realized values, each "
                     "next to naive baselines, and write a report a researcher can show their team."),
    )
    p.add_argument("--run", required=True, help="run id or a unique prefix of one (e.g. jennifer)")
    p.add_argument("--dates", required=True, help="which dates to score (see below)")
    p.add_argument("--data", default=None, help="raw-data root: folder or s3://bucket/prefix (default: the run's)")
    p.add_argument("--name", default=None,
                   help="evaluation folder name under {run}/evaluation/ (default: from --dates, e.g. 2024-02_to_2024-03)")
    add_store_option(p)
    p.add_argument("--experiment", default=None, help="restrict the run search to one experiment")
    add_endpoint_option(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


class _Progress:
    """A bar over the dates on a terminal; one line per date otherwise."""

    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, total: int) -> None:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="dates", unit="date", dynamic_ncols=True, file=sys.stderr)

    def date(self, outcome: DateOutcome) -> None:
        line = f"{outcome.date}  {outcome.status:<14} " + (
            f"{outcome.forecasts:>9,} forecasts" if outcome.status == "scored" else outcome.reason)
        line += "".join(f"\n    warning: {w}" for w in outcome.warnings)
        if self.bar is None:
            print(line, file=sys.stderr)
            return
        self.bar.update(1)
        if outcome.status != "scored" or outcome.warnings:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _f(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _ret_lines(ret: dict[str, Any]) -> list[str]:
    model, ic = ret["model"], ret["model"]["ic"]
    spread = model["top_minus_bottom"]["mean"]
    return [
        (f"ret_1h   IC {_f(ic['mean'])} (ICIR {_f(ic['icir'])}, t HAC {_f(ic['t_hac'], 3)}, naive {_f(ic['t_naive'], 3)})"
        f"  rank IC {_f(model['rank_ic']['mean'])}  hit rate {_f(model['hit_rate'])}"
        f"  top-bottom decile {_f(None if spread is None else spread * 1e4, 3)} bp"),
        (f"         MSE {_f(model['mse'])} vs zero {_f(ret['baseline_zero']['mse'])} (skill {_f(ret['mse_skill'])})"
        f"  | reversal IC {_f(ret['baseline_reversal']['ic']['mean'])}"),
    ]


def _vol_line(vol: dict[str, Any]) -> str:
    qlike = {k: _f(vol[k]["qlike"]) for k in ("model", "baseline_last_rv", "baseline_ewma_rv", "baseline_same_minute")}
    mz = vol["model"]["mz"]
    return (f"vol_10m  QLIKE {qlike['model']} vs last RV {qlike['baseline_last_rv']}, EWMA {qlike['baseline_ewma_rv']},"
            f" same minute {qlike['baseline_same_minute']}  | MZ slope {_f(mz['slope'])} R2 {_f(mz['r2'])}")


def _conf_line(head: str, conf: dict[str, Any]) -> str:
    return (f"{head:<9}coverage {_f(conf['coverage'])} vs stated {_f(conf['mean_conf'])} (mean decile gap "
            f"{_f(conf['coverage_gap']['mean_abs_pp'], 3)} pp)  spearman(conf, |err|) "
            f"{_f(conf['spearman_conf_vs_abs_err'])}")


def format_summary(result: EvalResult) -> str:
    """The main numbers, each next to its baselines, then where the report is."""
    m, d = result.metrics, result.metrics["dates"]
    lines = [
        (f"evaluation {result.name} of {m['run']}: {len(d['scored'])} dates scored, {len(d['no_predictions'])} "
        f"without predictions, {len(d['no_data'])} without data, {len(d['failed'])} failed; "
        f"{m['forecasts']:,} {m['mode']} forecasts in {result.seconds:.1f}s"),
        *_ret_lines(m["ret_1h"]),
        _vol_line(m["vol_10m"]),
        _conf_line("ret_conf", m["ret_conf"]),
        _conf_line("vol_conf", m["vol_conf"]),
    ]
    check = m.get("training_check")
    if check and check["same_dates"]:
        lines.append(f"agrees with training's metrics.json on its test dates: largest relative difference "
                     f"{_f(check['max_rel_diff'], 2)}")
    lines += [f"FAILED {day}: {reason}" for day, reason in d["failed"].items()]
    lines.append(f"report: {result.uri}/report.html")
    return "\n".join(lines)


def body(args: argparse.Namespace) -> int:
    from tthf.engine.evaluation.evaluate import evaluate

    bar = _Progress()
    try:
        result = evaluate(args.store, args.run, args.dates, experiment=args.experiment, data=args.data,
                          name=args.name, endpoint_url=args.s3_endpoint_url, on_start=bar.start, on_date=bar.date)
    finally:
        bar.close()
    print(format_summary(result))
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-eval", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

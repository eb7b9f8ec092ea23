"""What the commands print: the held-out metrics table, tthf-run's and tthf-eval's lines per date and summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tthf.engine.evaluation.compare import CompareResult
    from tthf.engine.evaluation.evaluate import DateOutcome, EvalResult
    from tthf.engine.evaluation.rolling import RollingResult
    from tthf.engine.inference_manifest import DateResult
    from tthf.engine.runtime.recorder import InferenceSummary


def format_metrics(metrics: dict) -> str:
    """The held-out table: each head next to its naive baseline, then the confidence checks."""
    test = metrics["test"]
    ret, vol = test["ret_1h"], test["vol_10m"]

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4g}"

    lines = [
        f"held-out test: {len(test['dates'])} dates {test['dates'][0]}..{test['dates'][-1]}, {test['n_windows']} windows",
        f"{'ret_1h':<26}{'model':>12}{'zero':>12}",
        *(
            f"  {k:<24}{f(ret['model'][k]):>12}{f(ret['baseline_zero'][k]):>12}"
            for k in ("mse", "mae", "ic", "rank_ic")
        ),
        f"  {'mse skill vs zero':<24}{f(ret['mse_skill']):>12}",
        f"{'vol_10m':<26}{'model':>12}{'last rv':>12}",
        *(
            f"  {k:<24}{f(vol['model'][k]):>12}{f(vol['baseline_last_rv'][k]):>12}"
            for k in ("mae", "rmse", "qlike", "corr")
        ),
        f"{'confidence':<26}{'ret_conf':>12}{'vol_conf':>12}",
    ]
    rc, vc = test["ret_conf"], test["vol_conf"]
    for key, label in (
        ("spearman_conf_vs_abs_err", "spearman(conf, |err|)"),
        ("mean_conf", "mean stated P(in band)"),
        ("coverage", "share in band"),
        ("max_quintile_calibration_gap", "max quintile gap"),
    ):
        lines.append(f"  {label:<24}{f(rc[key]):>12}{f(vc[key]):>12}")
    for q in range(len(rc["by_quintile"])):
        r, v = rc["by_quintile"][q], vc["by_quintile"][q] if q < len(vc["by_quintile"]) else None
        lines.append(
            f"  {'|err| conf quintile ' + str(q + 1):<24}{f(r['mean_abs_err']):>12}"
            f"{f(v['mean_abs_err'] if v else None):>12}"
        )
    return "\n".join(lines)


def run_date_line(result: DateResult) -> str:
    """tthf-run's line for one date: its rows, windows and seconds, or its status and why."""
    if result.status == "ok":
        s = result.seconds
        return f"{result.date}  ok       {result.rows:>9,} rows  {result.windows:>9,} windows  {s['total']:6.2f}s"
    return f"{result.date}  {result.status:<8} {result.reason}"


def eval_date_line(outcome: DateOutcome) -> str:
    """tthf-eval's line for one date: its forecasts, or its status and why; then its warnings."""
    line = f"{outcome.date}  {outcome.status:<14} " + (
        f"{outcome.forecasts:>9,} forecasts" if outcome.status == "scored" else outcome.reason
    )
    return line + "".join(f"\n    warning: {w}" for w in outcome.warnings)


def print_summary(summary: InferenceSummary) -> None:
    ok, failed = summary.by_status("ok"), summary.by_status("failed")
    skipped, missing = summary.by_status("skipped"), summary.by_status("no_data")
    stages = summary.stage_seconds()
    rate = summary.windows / summary.seconds if summary.seconds else 0.0
    print(f"\nrun {summary.run}  backend {summary.backend} ({summary.precision})  stride {summary.stride}")
    print(
        f"dates: {len(ok)} ok, {len(failed)} failed, {len(skipped)} skipped (already done), {len(missing)} without data"
    )
    print(f"windows: {summary.windows:,} in {summary.seconds:.1f}s ({rate:,.0f} windows/s)")
    if stages:
        busy = {k: v for k, v in stages.items() if k not in ("total", "windows", "inference")}
        print(
            "time per stage (busy seconds, all dates): "
            + ", ".join(f"{k} {v:.2f}s" for k, v in busy.items())
            + f" (of which windows {stages.get('windows', 0.0):.2f}s, inference {stages.get('inference', 0.0):.2f}s)"
        )
        if summary.executor == "ray":
            mode = f"on {summary.workers} Ray worker" + ("s" if summary.workers != 1 else "")
        else:
            mode = "overlapped" if summary.overlap else "one after another"
        print(f"stages {mode}: {summary.pipeline_seconds:.2f}s wall for {sum(busy.values()):.2f}s of stage work")
    for r in failed:
        print(f"FAILED {r.date}: {r.reason}")
    files = [r.file for r in ok + skipped if r.file]
    if files:
        print(f"predictions: {files[0].rsplit('/', 1)[0]}/")


def _f(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _ret_lines(ret: dict[str, Any]) -> list[str]:
    model, ic = ret["model"], ret["model"]["ic"]
    spread = model["top_minus_bottom"]["mean"]
    return [
        (
            f"ret_1h   IC {_f(ic['mean'])} (ICIR {_f(ic['icir'])}, t HAC {_f(ic['t_hac'], 3)}, naive {_f(ic['t_naive'], 3)})"
            f"  rank IC {_f(model['rank_ic']['mean'])}  hit rate {_f(model['hit_rate'])}"
            f"  top-bottom decile {_f(None if spread is None else spread * 1e4, 3)} bp"
        ),
        (
            f"         MSE {_f(model['mse'])} vs zero {_f(ret['baseline_zero']['mse'])} (skill {_f(ret['mse_skill'])})"
            f"  | reversal IC {_baseline(ret['baseline_reversal'], ret['baseline_reversal']['ic']['mean'])}"
        ),
    ]


def _baseline(section: dict[str, Any], value: Any) -> str:
    """A baseline's number, or ``absent`` when it could not be computed (never a made-up 0; the reason follows)."""
    return "absent" if section.get("absent") else _f(value)


def _absent_lines(m: dict[str, Any]) -> list[str]:
    """One line per reason a baseline could not be computed, naming the baselines."""
    by_reason: dict[str, list[str]] = {}
    for key, why in m.get("baselines_absent", {}).items():
        by_reason.setdefault(why, []).append(key.removeprefix("baseline_"))
    return [f"baselines absent ({', '.join(names)}): {why}" for why, names in by_reason.items()]


def _vol_lines(vol: dict[str, Any]) -> list[str]:
    keys = ("model", "baseline_last_rv", "baseline_ewma_rv", "baseline_same_minute")
    qlike = {k: _baseline(vol[k], vol[k]["qlike"]) for k in keys}
    won = {k: f"{b['model_lower']}/{b['dates']}" for k, b in vol["by_date"].items()}
    mz = vol["model"]["mz"]
    return [
        (
            f"vol_10m  QLIKE pooled {qlike['model']} vs last RV {qlike['baseline_last_rv']}, EWMA "
            f"{qlike['baseline_ewma_rv']}, same minute {qlike['baseline_same_minute']}  | MZ slope {_f(mz['slope'])}"
            f" R2 {_f(mz['r2'])}"
        ),
        (
            f"         dates the model's QLIKE is lower: vs last RV {won['baseline_last_rv']}, EWMA "
            f"{won['baseline_ewma_rv']}, same minute {won['baseline_same_minute']}"
        ),
    ]


def _conf_line(head: str, conf: dict[str, Any]) -> str:
    return (
        f"{head:<9}coverage {_f(conf['coverage'])} vs stated {_f(conf['mean_conf'])} (mean decile gap "
        f"{_f(conf['coverage_gap']['mean_abs_pp'], 3)} pp)  spearman(conf, |err|) "
        f"{_f(conf['spearman_conf_vs_abs_err'])}"
    )


def format_summary(result: EvalResult) -> str:
    """The main numbers, each next to its baselines, then where the report is."""
    m, d = result.metrics, result.metrics["dates"]
    lines = [
        (
            f"evaluation {result.name} of {m['run']}: {len(d['scored'])} dates scored, {len(d['no_predictions'])} "
            f"without predictions, {len(d['no_data'])} without data, {len(d['failed'])} failed; "
            f"{m['forecasts']:,} {m['mode']} forecasts in {result.seconds:.1f}s"
        ),
        *_ret_lines(m["ret_1h"]),
        *_vol_lines(m["vol_10m"]),
        *_absent_lines(m),
        _conf_line("ret_conf", m["ret_conf"]),
        _conf_line("vol_conf", m["vol_conf"]),
    ]
    check = m.get("training_check")
    if check and check["same_dates"]:
        lines.append(
            f"agrees with training's metrics.json on its test dates: largest relative difference "
            f"{_f(check['max_rel_diff'], 2)}"
        )
    lines += [f"FAILED {day}: {reason}" for day, reason in d["failed"].items()]
    lines.append(f"report: {result.uri}/report.html")
    return "\n".join(lines)


#: a summary names each date up to this many, and the range beyond
LIST_DATES = 10


def few_dates(days: list[str]) -> str:
    """``days`` (ascending) named one by one, or as ``N dates FIRST..LAST`` when there are many."""
    if len(days) <= LIST_DATES:
        return ", ".join(days)
    return f"{len(days)} dates {days[0]}..{days[-1]}"


def format_rolling(result: RollingResult) -> str:
    """The call's evaluation summary (when it scored something), what the history recorded, the alerts."""
    lines = [format_summary(result.evaluation)] if result.evaluation else []
    if not result.recorded:
        lines.append(f"history {result.name}: nothing new to score")
        return "\n".join(lines)
    mine = result.history.filter(result.history["evaluation"] == result.name)["status"].to_list()
    days = sorted(result.recorded.items())
    if len(days) <= LIST_DATES:
        recorded = ", ".join(f"{day} {status}" for day, status in days)
    else:
        failed = [day for day, status in days if status == "failed"]
        recorded = f"{few_dates([d for d, _ in days])}, " + (f"failed: {', '.join(failed)}" if failed else "all scored")
    lines.append(
        f"history {result.name}: recorded {recorded}; it holds {mine.count('scored')} scored and "
        f"{mine.count('failed')} failed dates"
    )
    lines += [
        f"ALERT {metric}: beyond its threshold on each of the last {len(days)} dates ({days[0]}..{days[-1]})"
        for metric, days in result.alerts.items()
    ]
    lines += [f"history: {uri}" for uri in result.files]
    return "\n".join(lines)


#: the scores a comparison's summary prints (every score is in its report)
HEADLINE_SCORES = ("ret_1h.model.ic.mean", "ret_1h.model.rank_ic.mean", "vol_10m.model.qlike", "ret_conf.coverage")


def format_comparison(result: CompareResult) -> str:
    """Two prediction sets: each one's summary, the row-level differences, the headline scores' differences,
    the comparison's report."""
    c = result.comparison
    base, other, rows = c["base"]["predictions"], c["other"]["predictions"], c["rows"]
    lines = [
        format_summary(result.base),
        format_summary(result.other),
        f"comparison {result.name}: {other} against {base} on {len(c['dates']['both'])} date(s); "
        f"{rows['matched_rows']:,} rows matched, {rows['only_base_rows']:,} only in {base}, "
        f"{rows['only_other_rows']:,} only in {other}",
        *(
            f"  {name:<8} max |diff| {_f(v['max_abs'])}  p99 |diff| {_f(v['p99_abs'])}"
            for name, v in rows["outputs"].items()
        ),
    ]
    scores = {r["score"]: r for r in c["scores"]}
    lines += [
        f"  {key}: {_f(scores[key]['base'])} -> {_f(scores[key]['other'])} ({_f(scores[key]['difference'], 2)})"
        for key in HEADLINE_SCORES
        if key in scores
    ]
    lines.append(f"report: {result.uri}/report.html")
    return "\n".join(lines)

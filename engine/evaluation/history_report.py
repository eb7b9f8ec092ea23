"""The rolling record drawn: ``evaluation/history.html`` and ``evaluation/metrics.prom``.

The page (self-contained like report.html: PNGs as ``data:`` URIs, no script) shows whether
the model is decaying: the per-date ret IC with its rolling mean over ``WINDOW`` dates and
that mean's HAC 95% band (Newey-West through ``array_scores.mean_test``: statsmodels),
the vol QLIKE of the model next to the best baseline on the same cells, and the drift of
the confidence coverage gaps; the user's thresholds are dashed lines, failed dates grey
lines, and a breach on each of the last N dates (``history.alerts``) a red banner with the
dates shaded. The Prometheus text file holds the same latest numbers for alerting (a
node_exporter textfile collector, or any scraper that reads the file).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from typing import Any

import numpy as np
import polars as pl
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tthf.engine.evaluation import array_scores
from tthf.engine.evaluation.history import NUMBERS, Thresholds
from tthf.engine.evaluation.report import BASE_COLORS, MODEL_COLOR, _png
from tthf.engine.runs import HISTORY_METRICS, HISTORY_PAGE, Run

#: dates in the rolling mean of the IC
WINDOW = 20
#: the page's table shows the latest rows
TABLE_ROWS = 30
ALERT_COLOR = "#c0392b"
_LABELS = {
    "ret_ic": "ret IC",
    "qlike_excess": "vol QLIKE minus the best baseline's",
    "coverage_gap": "confidence coverage gap",
}


def hac_lags(n: int) -> int:
    """Newey-West's rule of thumb for a daily series of ``n`` points: ``floor(4 (n/100)^(2/9))``, at least 1."""
    return max(1, math.floor(4 * (n / 100) ** (2 / 9)))


def rolling_ic(scored: pl.DataFrame, window: int = WINDOW) -> dict[str, np.ndarray]:
    """Per scored date: the mean ret IC of the last ``window`` dates and its HAC 95% band (NaN under 2 dates)."""
    ic = scored["ret_ic"].to_numpy().astype(np.float64)
    mean, low, high = (np.full(len(ic), np.nan) for _ in range(3))
    for i in range(len(ic)):
        part = ic[max(0, i - window + 1) : i + 1]
        test = array_scores.mean_test(part, hac_lags(int(np.isfinite(part).sum())))
        if test["mean"] is not None:
            mean[i] = test["mean"]
        if test["se_hac"] is not None:
            low[i], high[i] = mean[i] - 1.96 * test["se_hac"], mean[i] + 1.96 * test["se_hac"]
    return {"mean": mean, "low": low, "high": high}


def _col(frame: pl.DataFrame, name: str) -> np.ndarray:
    return frame[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _marks(ax: Axes, failed: list[dt.date], alerted: list[dt.date]) -> None:
    for i, day in enumerate(failed):
        ax.axvline(mdates.date2num(day), color="0.6", lw=1, ls=":", label="failed date" if i == 0 else None)
    if alerted:
        first, last = mdates.date2num(min(alerted)), mdates.date2num(max(alerted))
        ax.axvspan(first - 0.5, last + 0.5, color=ALERT_COLOR, alpha=0.12, label="alert")


def _level(ax: Axes, level: float | None, label: str, *mirror: bool) -> None:
    if level is None:
        return
    ax.axhline(level, color=ALERT_COLOR, ls="--", lw=1, label=label)
    if mirror:
        ax.axhline(-level, color=ALERT_COLOR, ls="--", lw=1)


def figures(history: pl.DataFrame, name: str, warned: dict[str, list[dt.date]]) -> dict[str, bytes]:
    """The three PNGs of the page, from the rows of evaluation ``name``."""
    mine = history.filter(pl.col("evaluation") == name).sort("date")
    scored = mine.filter(pl.col("status") == "scored")
    failed = mine.filter(pl.col("status") == "failed")["date"].to_list()
    levels = Thresholds.of_row(mine.row(-1, named=True))
    days = scored["date"].to_list()

    def ic(fig: Figure) -> None:
        ax = fig.subplots()
        roll = rolling_ic(scored)
        ax.fill_between(days, roll["low"], roll["high"], color=MODEL_COLOR, alpha=0.18, label="HAC 95% band")
        ax.plot(days, roll["mean"], color=MODEL_COLOR, lw=2, label=f"rolling mean IC ({WINDOW} dates)")
        ax.plot(days, _col(scored, "ret_ic"), "o", color=MODEL_COLOR, ms=4, label="IC of the date")
        ax.plot(days, _col(scored, "ret_rank_ic"), "x", color=BASE_COLORS[0], ms=4, label="rank IC of the date")
        ax.axhline(0, color="0.5", lw=0.8)
        _level(ax, levels.min_ic, f"min IC {levels.min_ic}")
        _marks(ax, failed, warned.get("ret_ic", []))
        ax.set_ylabel("mean cross-sectional IC")
        ax.set_title("ret_1h: IC by date, rolling mean and its HAC band")
        ax.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()

    def qlike(fig: Figure) -> None:
        top, bottom = fig.subplots(2, 1, sharex=True)
        top.plot(days, _col(scored, "model_qlike_paired"), "-o", color=MODEL_COLOR, ms=3, label="model")
        top.plot(days, _col(scored, "baseline_qlike"), "-s", color=BASE_COLORS[1], ms=3, label="best baseline")
        top.set_ylabel("QLIKE (lower is better)")
        top.set_title("vol_10m: each date's QLIKE (mean over its cells) against the best baseline on the same cells")
        top.legend(loc="best", fontsize=8)
        excess = _col(scored, "qlike_excess")
        top_color = [ALERT_COLOR if x > 0 else MODEL_COLOR for x in np.nan_to_num(excess)]
        bottom.bar(days, excess, color=top_color, width=0.8)
        bottom.axhline(0, color="0.5", lw=0.8)
        _level(bottom, levels.max_qlike_excess, f"max excess {levels.max_qlike_excess}")
        _marks(bottom, failed, warned.get("qlike_excess", []))
        bottom.set_ylabel("model minus baseline")
        if levels.max_qlike_excess is not None or failed:
            bottom.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()

    def coverage(fig: Figure) -> None:
        ax = fig.subplots()
        ax.plot(days, _col(scored, "ret_coverage_gap"), "-o", color=MODEL_COLOR, ms=3, label="ret_conf")
        ax.plot(days, _col(scored, "vol_coverage_gap"), "-s", color=BASE_COLORS[2], ms=3, label="vol_conf")
        ax.axhline(0, color="0.5", lw=0.8)
        _level(ax, levels.max_coverage_gap, f"max |gap| {levels.max_coverage_gap}", True)
        _marks(ax, failed, warned.get("coverage_gap", []))
        ax.set_ylabel("coverage minus stated confidence")
        ax.set_title("confidence: coverage drift (above 0: under-confident)")
        ax.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()

    return {
        "history_ic.png": _png(ic),
        "history_qlike.png": _png(qlike, height=5.0),
        "history_coverage.png": _png(coverage),
    }


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _banner(warned: dict[str, list[dt.date]], levels: Thresholds) -> str:
    watched = [
        k
        for k, v in (
            ("ret_ic", levels.min_ic),
            ("qlike_excess", levels.max_qlike_excess),
            ("coverage_gap", levels.max_coverage_gap),
        )
        if v is not None
    ]
    if not watched:
        return '<p class="note">No thresholds set (tthf-eval --rolling --min-ic / --max-qlike-excess / --max-coverage-gap).</p>'
    if not warned:
        return f'<p class="ok">No alert: no watched number ({", ".join(_LABELS[k] for k in watched)}) breached its threshold on each of the last {levels.dates} dates.</p>'
    items = "".join(
        f"<li>{html.escape(_LABELS[k])} beyond its threshold on each of the last {len(d)} dates "
        f"({html.escape(str(d[0]))} to {html.escape(str(d[-1]))})</li>"
        for k, d in warned.items()
    )
    return f'<div class="alert"><strong>ALERT</strong><ul>{items}</ul></div>'


def render_html(
    history: pl.DataFrame, run_name: str, name: str, warned: dict[str, list[dt.date]], pngs: dict[str, bytes]
) -> str:
    """The self-contained page."""
    mine = history.filter(pl.col("evaluation") == name).sort("date")
    levels = Thresholds.of_row(mine.row(-1, named=True))
    scored = mine.filter(pl.col("status") == "scored")
    latest = scored.row(-1, named=True) if scored.height else {}
    head = ["date", "status", *NUMBERS, "best_baseline", "rows", "reason"]
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in head) + "</tr>"
        for r in mine.tail(TABLE_ROWS).reverse().iter_rows(named=True)
    )
    figs = "".join(
        f'<img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}">' for k, v in pngs.items()
    )
    latest_rows = "".join(f"<tr><th>{c}</th><td>{_fmt(latest.get(c))}</td></tr>" for c in NUMBERS)
    failed = mine.filter(pl.col("status") == "failed").height
    thresholds = (
        f"min IC {_fmt(levels.min_ic)}, max QLIKE excess {_fmt(levels.max_qlike_excess)}, "
        f"max |coverage gap| {_fmt(levels.max_coverage_gap)}, over the last {levels.dates} dates"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tthf history: {html.escape(run_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1050px; color: #222; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} td, th {{ border: 1px solid #ccc; padding: 2px 6px; }}
td:first-child {{ white-space: nowrap; }}
.alert {{ background: #fbe3e0; border: 2px solid {ALERT_COLOR}; color: {ALERT_COLOR}; padding: 0.5em 1em; }}
.ok {{ background: #e5f4e5; padding: 0.5em 1em; }} .note {{ color: #666; }}
</style></head><body>
<h1>How the model is doing: {html.escape(run_name)}</h1>
<p>Evaluation <code>{html.escape(name)}</code>: {scored.height} scored date(s){f", {failed} failed" if failed else ""},
{_fmt(mine["date"].min())} to {_fmt(mine["date"].max())}. Thresholds: {thresholds}.</p>
{_banner(warned, levels)}
<h2>Latest scored date: {_fmt(latest.get("date"))}</h2>
<table>{latest_rows}</table>
{figs}
<h2>The last {TABLE_ROWS} dates</h2>
<table><tr>{"".join(f"<th>{c}</th>" for c in head)}</tr>{body}</table>
<p class="note">One row per date from evaluation/history.parquet; docs/operations.md explains the numbers.
QLIKE here is each date's own mean; tthf-eval's report.html pools the cells of all its dates into one mean, which a
few floored forecasts can decide, and shows this date-by-date contest in its row "dates the model's QLIKE is
lower".</p>
</body></html>
"""


def prometheus_text(history: pl.DataFrame, run_name: str, name: str, warned: dict[str, list[dt.date]]) -> bytes:
    """The latest numbers in Prometheus's text format (for a textfile collector)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    labels = {"run": run_name, "evaluation": name}
    mine = history.filter(pl.col("evaluation") == name).sort("date")
    scored = mine.filter(pl.col("status") == "scored")
    latest = scored.row(-1, named=True) if scored.height else {}
    for key in NUMBERS:
        gauge = Gauge(f"tthf_eval_{key}", f"{key} of the latest scored date", list(labels), registry=registry)
        value = latest.get(key)
        gauge.labels(**labels).set(value if value is not None else math.nan)
    rolling = rolling_ic(scored)["mean"] if scored.height else np.array([math.nan])
    Gauge(
        "tthf_eval_rolling_ret_ic", f"mean ret IC of the last {WINDOW} scored dates", list(labels), registry=registry
    ).labels(**labels).set(float(rolling[-1]))
    day = latest.get("date")
    stamp = dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() if day else math.nan
    Gauge(
        "tthf_eval_latest_date_seconds",
        "the latest scored date (Unix time of its midnight UTC)",
        list(labels),
        registry=registry,
    ).labels(**labels).set(stamp)
    dates = Gauge("tthf_eval_dates", "dates in the history by status", [*labels, "status"], registry=registry)
    for status in ("scored", "failed"):
        dates.labels(**labels, status=status).set(mine.filter(pl.col("status") == status).height)
    alert = Gauge(
        "tthf_eval_alert",
        "1 when the number breached its threshold on each of the last N dates",
        [*labels, "metric"],
        registry=registry,
    )
    for metric in _LABELS:
        alert.labels(**labels, metric=metric).set(1 if metric in warned else 0)
    return generate_latest(registry)


def write(run: Run, history: pl.DataFrame, name: str, warned: dict[str, list[dt.date]]) -> list[str]:
    """Draw the page and the Prometheus file into the run's ``evaluation/``; their URIs."""
    pngs = figures(history, name, warned)
    run.write_text(HISTORY_PAGE, render_html(history, run.ref.name, name, warned, pngs))
    run.write_bytes(HISTORY_METRICS, prometheus_text(history, run.ref.name, name, warned))
    return [run.store.uri(HISTORY_PAGE), run.store.uri(HISTORY_METRICS)]

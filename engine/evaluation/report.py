"""The figures (PNG, matplotlib's Agg renderer) and the one self-contained report.html.

Everything is drawn from the metrics dict alone, so a report can be redrawn from a
metrics.json. The page embeds each PNG as a base64 ``data:`` URI and has no script
and no external resource: it opens offline, from a mail attachment as well as from the
run folder, where the same PNGs are written beside it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MODEL_COLOR, BASE_COLORS = "#1f5fa8", ("#d1782b", "#4a9a4a", "#8a5aa8")
#: the session opens at 09:30 New York time on every trading day (half days close early)
OPEN_MINUTES = 9 * 60 + 30


def _session_axis(ax: Axes, n_minutes: int) -> None:
    ticks = list(range(0, n_minutes + 1, 60))
    ax.set_xticks(ticks, [f"{(OPEN_MINUTES + t) // 60:02d}:{(OPEN_MINUTES + t) % 60:02d}" for t in ticks])
    ax.set_xlabel("forecast minute (New York time)")
    ax.set_xlim(0, n_minutes)


def _absent(m: dict[str, Any], key: str) -> str:
    """Why baseline ``key`` could not be computed ('' when it was): metrics.json ``baselines_absent``."""
    return str(m.get("baselines_absent", {}).get(key, ""))


def _absent_note(m: dict[str, Any], section: str) -> str:
    """The page's statement of the section's baselines that could not be computed, and why."""
    absent = {k: why for k, why in m.get("baselines_absent", {}).items() if k in m[section]}
    if not absent:
        return ""
    items = "".join(
        f"<li>{html.escape(k.removeprefix('baseline_'))}: {html.escape(why)}</li>" for k, why in absent.items()
    )
    return f"<p><b>Baselines absent</b> (shown as —, not as 0):</p><ul>{items}</ul>"


def _values(xs: list[float | None]) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in xs], dtype=np.float64)


def _png(draw: Callable[[Figure], None], width: float = 10.0, height: float = 4.0) -> bytes:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _ic_by_minute(m: dict[str, Any]) -> Callable[[Figure], None]:
    by = m["ret_1h"]["by_minute"]

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.plot(by["minute"], _values(by["model_ic"]), color=MODEL_COLOR, label="model IC")
        ax.plot(by["minute"], _values(by["model_rank_ic"]), color=MODEL_COLOR, ls="--", label="model rank IC")
        if not _absent(m, "baseline_reversal"):
            ax.plot(by["minute"], _values(by["baseline_reversal_ic"]), color=BASE_COLORS[0], label="reversal IC")
        ax.axhline(0, color="0.5", lw=0.8)
        _session_axis(ax, len(by["minute"]))
        ax.set_ylabel("cross-sectional IC, mean over dates")
        ax.set_title("ret_1h: IC by minute of the session")
        ax.legend(loc="best")

    return draw


def _ic_by_date(m: dict[str, Any]) -> Callable[[Figure], None]:
    rows = m["per_date"]

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        x = np.arange(len(rows))
        ax.bar(x - 0.2, _values([r["ic"] for r in rows]), 0.4, color=MODEL_COLOR, label="model IC")
        if not _absent(m, "baseline_reversal"):
            ax.bar(x + 0.2, _values([r["reversal_ic"] for r in rows]), 0.4, color=BASE_COLORS[0], label="reversal IC")
        ax.axhline(0, color="0.5", lw=0.8)
        step = max(1, len(rows) // 15)
        ax.set_xticks(x[::step], [r["date"] for r in rows][::step], rotation=30, ha="right")
        ax.set_ylabel("mean cross-sectional IC")
        ax.margins(y=0.25)  # room for the legend above the bars
        ax.set_title("ret_1h: IC by date")
        ax.legend(loc="best")

    return draw


def _deciles(m: dict[str, Any]) -> Callable[[Figure], None]:
    ret = m["ret_1h"]

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        x = np.arange(1, 11)
        ax.bar(x - 0.2, _values(ret["model"]["deciles"]) * 1e4, 0.4, color=MODEL_COLOR, label="model forecast deciles")
        if not _absent(m, "baseline_reversal"):
            ax.bar(
                x + 0.2,
                _values(ret["baseline_reversal"]["deciles"]) * 1e4,
                0.4,
                color=BASE_COLORS[0],
                label="reversal deciles",
            )
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(x)
        ax.set_xlabel("forecast decile within each minute (1 = lowest)")
        ax.set_ylabel("mean realized ret_1h (bp)")
        ax.margins(y=0.2)
        ax.set_title("ret_1h: realized return by forecast decile")
        ax.legend(loc="best")

    return draw


def _vol_calibration(m: dict[str, Any]) -> Callable[[Figure], None]:
    vol = m["vol_10m"]
    names = (
        ("model", "model", MODEL_COLOR),
        ("baseline_last_rv", "last 10-min RV", BASE_COLORS[0]),
        ("baseline_ewma_rv", "EWMA of RV", BASE_COLORS[1]),
        ("baseline_same_minute", "same minute, prev. days", BASE_COLORS[2]),
    )

    def draw(fig: Figure) -> None:
        left, right = fig.subplots(1, 2)
        top = 0.0
        for key, label, color in names[:2]:
            bins = vol[key]["calibration_bins"]
            f, y = _values(bins["forecast"]) * 1e4, _values(bins["realized"]) * 1e4
            left.plot(f, y, "o-", color=color, ms=4, label=f"{label} (slope {_fmt(vol[key]['mz']['slope'])})")
            top = max(top, np.nanmax(f, initial=0.0), np.nanmax(y, initial=0.0))
        left.plot([0, top], [0, top], color="0.5", lw=0.8, ls=":", label="unbiased")
        left.set_xlabel("forecast vol_10m (bp), 20 equal-count bins")
        left.set_ylabel("mean realized vol_10m (bp)")
        left.set_title("vol_10m: Mincer-Zarnowitz, binned")
        left.legend(loc="best", fontsize="small")
        by = vol["by_minute"]
        for key, label, color in names:
            right.plot(by["minute"], _values(by[f"{key}_qlike"]), color=color, label=label)
        right.set_yscale("log")
        _session_axis(right, len(by["minute"]))
        right.set_ylabel("QLIKE (log scale)")
        right.set_title("vol_10m: QLIKE by minute of the session")
        right.legend(loc="best", fontsize="small")

    return draw


def _per_head(m: dict[str, Any], plot: Callable[[Axes, dict[str, Any], str], None]) -> Callable[[Figure], None]:
    def draw(fig: Figure) -> None:
        for ax, head in zip(fig.subplots(1, 2), ("ret_conf", "vol_conf")):
            plot(ax, m[head], head)

    return draw


def _reliability(ax: Axes, conf: dict[str, Any], head: str) -> None:
    bins = conf["by_decile"]
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls=":", label="calibrated")
    ax.plot(
        _values([b["mean_conf"] for b in bins]),
        _values([b["coverage"] for b in bins]),
        "o-",
        color=MODEL_COLOR,
        label=f"by decile (mean |gap| {_fmt(conf['coverage_gap']['mean_abs_pp'])} pp)",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("stated probability of landing in the band")
    ax.set_ylabel("realized share in the band")
    ax.set_title(f"{head}: reliability")
    ax.legend(loc="upper left", fontsize="small")


def _error_by_decile(ax: Axes, conf: dict[str, Any], head: str) -> None:
    bins = conf["by_decile"]
    ax.bar(np.arange(1, len(bins) + 1), _values([b["mean_abs_err"] for b in bins]), color=MODEL_COLOR)
    ax.set_xticks(np.arange(1, len(bins) + 1))
    ax.set_xlabel("confidence decile (1 = least confident)")
    ax.set_ylabel("mean |error|" + (" (log vol)" if head == "vol_conf" else ""))
    ax.set_title(f"{head}: absolute error by confidence decile")


def _risk_coverage(ax: Axes, conf: dict[str, Any], head: str) -> None:
    rc = conf["risk_coverage"]
    cover = _values(rc["coverage"]) * 100
    ax.plot(cover, _values(rc["mean_abs_err_at"]), color=MODEL_COLOR, label=f"by confidence (AURC {_fmt(rc['aurc'])})")
    if rc["mean_abs_err"] is not None:
        ax.axhline(rc["mean_abs_err"], color=BASE_COLORS[0], lw=0.8, ls="--", label="no ranking")
    ax.set_xlabel("most confident x% of forecasts")
    ax.set_ylabel("their mean |error|")
    ax.set_title(f"{head}: risk-coverage")
    ax.legend(loc="best", fontsize="small")


FIGURES: tuple[tuple[str, str, Callable[[dict[str, Any]], Callable[[Figure], None]]], ...] = (
    ("ic_by_minute.png", "IC by minute of the session", _ic_by_minute),
    ("ic_by_date.png", "IC by date", _ic_by_date),
    ("decile_returns.png", "Realized return by forecast decile", _deciles),
    ("vol_calibration.png", "Volatility calibration", _vol_calibration),
    ("reliability.png", "Reliability of the confidence scores", lambda m: _per_head(m, _reliability)),
    ("error_by_confidence.png", "Error by confidence decile", lambda m: _per_head(m, _error_by_decile)),
    ("risk_coverage.png", "Risk-coverage", lambda m: _per_head(m, _risk_coverage)),
)


def figures(metrics: dict[str, Any]) -> dict[str, bytes]:
    """Every figure of the report as PNG bytes, by file name."""
    return {name: _png(make(metrics)) for name, _, make in FIGURES}


# ---------------------------------------------------------------------------------------
# the page


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(name: str, title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(title)}" data-file="{name}">'
        f"<figcaption>{html.escape(title)} ({html.escape(name)})</figcaption></figure>"
    )


def _ret_table(m: dict[str, Any]) -> str:
    r = m["ret_1h"]
    cols = (r["model"], r["baseline_zero"], r["baseline_reversal"])

    def get(d: dict[str, Any], *path: str) -> Any:
        for key in path:
            d = d.get(key) if isinstance(d, dict) else None  # type: ignore[assignment]
        return d

    def bp(x: Any) -> Any:
        return None if x is None else x * 1e4

    rows = [
        ["IC, mean", *(get(c, "ic", "mean") for c in cols)],
        ["IC, std", *(get(c, "ic", "std") for c in cols)],
        ["ICIR (mean / std)", *(get(c, "ic", "icir") for c in cols)],
        ["t-stat, naive", *(get(c, "ic", "t_naive") for c in cols)],
        [f"t-stat, HAC ({r['hac_lags']} lags)", *(get(c, "ic", "t_hac") for c in cols)],
        ["rank IC, mean", *(get(c, "rank_ic", "mean") for c in cols)],
        [f"rank IC t-stat, HAC ({r['hac_lags']} lags)", *(get(c, "rank_ic", "t_hac") for c in cols)],
        ["hit rate", *(get(c, "hit_rate") for c in cols)],
        ["top - bottom decile (bp)", *(bp(get(c, "top_minus_bottom", "mean")) for c in cols)],
        ["top - bottom t-stat, HAC", *(get(c, "top_minus_bottom", "t_hac") for c in cols)],
        ["MSE", r["model"]["mse"], r["baseline_zero"]["mse"], None],
        ["MSE skill vs zero", r["mse_skill"], None, None],
    ]
    return _table(["ret_1h", "model", "zero", "reversal (-ret_30)"], rows)


def _vol_table(m: dict[str, Any]) -> str:
    v = m["vol_10m"]
    keys = ("model", "baseline_last_rv", "baseline_ewma_rv", "baseline_same_minute")

    def mz(key: str, name: str) -> Any:
        return v[key]["mz"][name]

    by_date = [v["by_date"][k] for k in keys[1:]]
    rows = [
        ["QLIKE, pooled over all forecasts", *(v[k]["qlike"] for k in keys)],
        ["dates the model's QLIKE is lower", None, *(f"{b['model_lower']} of {b['dates']}" for b in by_date)],
        [
            "median of the dates' QLIKE: baseline / model",
            None,
            *(f"{_fmt(b['baseline_median'], 3)} / {_fmt(b['model_median'], 3)}" for b in by_date),
        ],
        ["MSE (vol)", *(v[k]["mse"] for k in keys)],
        ["MSE (variance)", *(v[k]["mse_var"] for k in keys)],
        ["MZ intercept", *(mz(k, "intercept") for k in keys)],
        ["  its HAC s.e.", *(mz(k, "se_intercept") for k in keys)],
        ["MZ slope", *(mz(k, "slope") for k in keys)],
        ["  its HAC s.e.", *(mz(k, "se_slope") for k in keys)],
        ["MZ R²", *(mz(k, "r2") for k in keys)],
        ["Wald p (a=0, b=1)", *(mz(k, "wald_p") for k in keys)],
    ]
    return _table(["vol_10m", "model", "last 10-min RV", "EWMA of RV", "same minute, prev. days"], rows)


def _score_note(m: dict[str, Any]) -> str:
    """Which confidences are scores (an imported run's): ranked, not calibrated."""
    heads = [h for h in ("ret_conf", "vol_conf") if m[h].get("kind") == "score"]
    if not heads:
        return ""
    return f"<p><b>{html.escape(', '.join(heads))}: {html.escape(m[heads[0]]['calibration'])}.</b></p>"


def _conf_table(m: dict[str, Any]) -> str:
    heads = (m["ret_conf"], m["vol_conf"])
    rows = [
        ["band", *(h["band"] for h in heads)],
        ["forecasts", *(h["n"] for h in heads)],
        ["Spearman(confidence, |error|)", *(h["spearman_conf_vs_abs_err"] for h in heads)],
        ["mean stated probability", *(h["mean_conf"] for h in heads)],
        ["realized coverage", *(h["coverage"] for h in heads)],
        ["coverage gap, overall (pp)", *(h["coverage_gap"]["overall_pp"] for h in heads)],
        ["coverage gap, mean |decile| (pp)", *(h["coverage_gap"]["mean_abs_pp"] for h in heads)],
        ["coverage gap, worst decile (pp)", *(h["coverage_gap"]["max_abs_pp"] for h in heads)],
        ["AURC (risk-coverage area)", *(h["risk_coverage"]["aurc"] for h in heads)],
        ["AURC of a perfect ranking", *(h["risk_coverage"]["aurc_oracle"] for h in heads)],
        ["mean |error| (no ranking)", *(h["risk_coverage"]["mean_abs_err"] for h in heads)],
    ]
    return _table(["confidence", "ret_conf", "vol_conf"], rows)


def _dates_section(m: dict[str, Any]) -> str:
    d = m["dates"]
    parts = [f"<p>{len(d['scored'])} date{'s' * (len(d['scored']) != 1)} scored.</p>"]
    for key, text in (
        ("no_predictions", "without a predictions file (run tthf-run for them)"),
        ("no_data", "without raw data"),
    ):
        if d[key]:
            n = len(d[key])
            parts.append(f'<p class="warn">{n} date{"s" * (n != 1)} {text}: {html.escape(", ".join(d[key]))}</p>')
    for day, reason in d["failed"].items():
        parts.append(f'<p class="warn">{html.escape(day)} failed: {html.escape(reason)}</p>')
    return "".join(parts)


def _per_date_table(m: dict[str, Any]) -> str:
    rows = [
        [
            r["date"],
            r["rows"],
            r["forecasts"],
            r["ic"],
            r["rank_ic"],
            r["hit_rate"],
            r["vol_qlike"],
            r["ret_coverage"],
            r["vol_coverage"],
            r["zero_vol_share"],
            "; ".join(r["warnings"]) or "",
        ]
        for r in m["per_date"]
    ]
    header = [
        "date",
        "rows",
        "forecasts",
        "IC",
        "rank IC",
        "hit rate",
        "model QLIKE",
        "ret cover",
        "vol cover",
        "zero vol",
        "warnings",
    ]
    return _table(header, rows, "dates")


def _training_section(m: dict[str, Any]) -> str:
    check = m.get("training_check")
    if not check:
        return "<p>The run has no metrics.json to compare with.</p>"
    note = (
        "the same dates as training's held-out test split"
        if check["same_dates"]
        else f"other dates than training's test split ({', '.join(check['training_dates'])}): not comparable"
    )
    rows = [[r["key"], r["training"], r["evaluation"], r["rel_diff"]] for r in check["rows"]]
    return (
        f"<p>Pooled scores with training's definitions, on {html.escape(note)}; "
        f"largest relative difference {_fmt(check['max_rel_diff'])}.</p>"
        + _table(["metrics.json key", "training", "this evaluation", "relative difference"], rows)
    )


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f4f7; }
table.dates td:last-child { text-align: left; color: #a33; }
figure { margin: 1rem 0; } figure img { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.85rem; }
.meta { color: #555; } .warn { color: #a33; }
"""


def render_html(metrics: dict[str, Any], pngs: dict[str, bytes], extra: str = "") -> str:
    """The report page, every figure embedded; ``extra`` is a section's HTML placed before the per-date table."""
    m = metrics
    img = {name: _img(name, title, pngs[name]) for name, title, _ in FIGURES}
    v = m["vol_10m"]
    meta = (
        f"run <b>{html.escape(m['run'])}</b> · dates {html.escape(m['dates']['spec'])} · {m['mode']} predictions "
        f"(every {m['step_minutes']} min) · {m['rows']:,} rows, {m['forecasts']:,} forecasts scored · "
        f"data {html.escape(m['data_root'])} · {html.escape(m['created'])}"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>tthf-eval: {html.escape(m["run"])} / {html.escape(m["name"])}</title><style>{CSS}</style></head>
<body>
<h1>Forecast evaluation: {html.escape(m["name"])}</h1>
<p class="meta">{meta}</p>
<h2>Dates</h2>
{_dates_section(m)}
<h2>Return head (ret_1h)</h2>
<p>IC: correlation across symbols of forecast and realized next-hour return, per minute, then over minutes.
t-statistics use Newey-West errors with {m["ret_1h"]["hac_lags"]} lags, which cover the overlap of the 60-minute
labels; the naive one treats the minutes as independent. {m["ret_1h"]["n"]:,} forecasts with a realized return.</p>
{_ret_table(m)}
{_absent_note(m, "ret_1h")}
{img["ic_by_minute.png"]}
{img["ic_by_date.png"]}
{img["decile_returns.png"]}
<h2>Volatility head (vol_10m)</h2>
<p>{v["n"]:,} forecasts where the realized value and every baseline exist. QLIKE is on variances with both sides
floored at {_fmt(v["qlike_floor"])} (it is undefined at a realized volatility of 0; {_fmt(v["zero_realized_share"])}
of these were 0). The pooled QLIKE is the mean over all these forecasts of all dates (training's number): a few
forecasts at the floor followed by a move can decide it. The next two rows score date by date instead, each date on
the forecasts where the model and that baseline exist, as the rolling history (tthf-eval --rolling) does.
Mincer-Zarnowitz: realized on forecast, Driscoll-Kraay (HAC) errors with {v["hac_lags"]} lags.</p>
{_vol_table(m)}
{_absent_note(m, "vol_10m")}
{img["vol_calibration.png"]}
<h2>Confidence heads (ret_conf, vol_conf)</h2>
<p>Each confidence is the model's probability that the realized value lands within the band of its forecast
(ret: |error| &le; ret_band; vol: |log error| &le; vol_band). Higher confidence should mean smaller errors.</p>
{_score_note(m)}
{_conf_table(m)}
{img["reliability.png"]}
{img["error_by_confidence.png"]}
{img["risk_coverage.png"]}
<h2>Agreement with training's held-out metrics</h2>
{_training_section(m)}
{extra}
<h2>Per date</h2>
{_per_date_table(m)}
<p class="meta">metrics.json beside this page holds every number shown here; docs/evaluation.md defines them.</p>
</body></html>
"""

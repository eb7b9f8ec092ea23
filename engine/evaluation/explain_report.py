"""The report's "What the model looks at" section: figures and tables of ``metrics["explain"]``.

``tthf-eval --explain`` computes the section (``tthf.engine.explain.section``, a later stage);
like the rest of the report it is drawn from the metrics dict alone, so a report can be
redrawn from a metrics.json. Without an ``explain`` entry there are no figures and no section.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tthf.engine.evaluation.report import BASE_COLORS, MODEL_COLOR, _fmt, _img, _png, _table

#: the measures drawn, each with its axis label
MEASURES = (("ret_ic_drop", "ret_1h IC drop"), ("vol_qlike_rise", "vol_10m QLIKE rise"))
TOP_FEATURES = 15


def _bars(ax: Axes, rows: list[dict[str, Any]], measure: str, label: str) -> None:
    """Horizontal bars of ``measure`` with their 95% intervals, the largest on top."""
    rows = sorted(rows, key=lambda r: r[measure]["mean"] if r[measure]["mean"] is not None else -np.inf)
    mean = np.array([np.nan if r[measure]["mean"] is None else r[measure]["mean"] for r in rows])
    lo = np.array([np.nan if r[measure]["lo"] is None else r[measure]["lo"] for r in rows])
    hi = np.array([np.nan if r[measure]["hi"] is None else r[measure]["hi"] for r in rows])
    y = np.arange(len(rows))
    err = np.vstack([mean - lo, hi - mean]) if np.isfinite(lo).any() else None
    ax.barh(y, mean, xerr=err, color=MODEL_COLOR, ecolor="0.4", capsize=2)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=8)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_xlabel(f"{label} (bars: 95% interval across dates)")


def _ranked(kind: str, top: int | None) -> Callable[[dict[str, Any]], Callable[[Figure], None]]:
    def make(m: dict[str, Any]) -> Callable[[Figure], None]:
        e = m["explain"]

        def draw(fig: Figure) -> None:
            for ax, (measure, label) in zip(fig.subplots(1, 2), MEASURES, strict=True):
                rows = sorted(e[kind], key=lambda r: -(r[measure]["mean"] or 0.0))[:top]
                _bars(ax, rows, measure, label)
                ax.set_title(f"{label}, by {kind}" + (f" (top {top})" if top else ""))

        return draw

    return make


def _lags(m: dict[str, Any]) -> Callable[[Figure], None]:
    e = m["explain"]

    def draw(fig: Figure) -> None:
        axes = fig.subplots(1, 3)
        lags = [int(r["name"]) for r in e["lag"]]
        for ax, (measure, label) in zip(axes[:2], MEASURES, strict=True):
            ax.bar(lags, [r[measure]["mean"] or 0.0 for r in e["lag"]], color=MODEL_COLOR)
            ax.set_xlabel("lag (minutes back)")
            ax.set_title(f"{label}, by lag")
        ax = axes[2]
        att = e["attention"]
        if att["available"]:
            for layer, heads in enumerate(att["from_last"]):
                for head, weights in enumerate(heads):
                    ax.plot(lags, weights, color=BASE_COLORS[layer % len(BASE_COLORS)], alpha=0.4 + 0.6 / (head + 1))
            ax.axhline(1.0 / len(lags), color="0.5", lw=0.8, ls="--")
            ax.set_title("attention of the forecast minute")
        else:
            ax.text(0.5, 0.5, "attention not available", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("lag; a line per layer (colour) and head")

    return draw


#: (file, title, how it is drawn from the metrics)
FIGURES: tuple[tuple[str, str, Callable[[dict[str, Any]], Callable[[Figure], None]]], ...] = (
    ("importance_families.png", "Importance by feature family", _ranked("family", None)),
    ("importance_features.png", "Importance by feature", _ranked("feature", TOP_FEATURES)),
    ("importance_lags.png", "Importance and attention by lag", _lags),
)


def figures(metrics: dict[str, Any]) -> dict[str, bytes]:
    """The section's figures as PNG bytes, by file name (none without ``metrics["explain"]``)."""
    if "explain" not in metrics:
        return {}
    return {name: _png(make(metrics), height=5.0) for name, _, make in FIGURES}


def _ci(cell: dict[str, Any]) -> str:
    if cell["mean"] is None:
        return "—"
    if cell["lo"] is None:
        return _fmt(cell["mean"], 3)
    return f"{_fmt(cell['mean'], 3)} [{_fmt(cell['lo'], 2)}, {_fmt(cell['hi'], 2)}]"


def _rows(rows: list[dict[str, Any]], first: Callable[[dict[str, Any]], list[Any]]) -> list[list[Any]]:
    return [[*first(r), _ci(r["ret_ic_drop"]), _ci(r["ret_rank_ic_drop"]), _ci(r["vol_qlike_rise"])] for r in rows]


HEADER = ["ret_1h IC drop", "rank IC drop", "vol_10m QLIKE rise"]


def section(metrics: dict[str, Any], pngs: dict[str, bytes]) -> str:
    """The section's HTML (empty without ``metrics["explain"]``)."""
    e = metrics.get("explain")
    if not e:
        return ""
    img = {name: _img(name, title, pngs[name]) for name, title, _ in FIGURES}
    base = e["base"]
    families = _rows(e["family"], lambda r: [r["name"], len(e["families"][r["name"]])])
    features = _rows(e["feature"][:TOP_FEATURES], lambda r: [r["name"]])
    lags = _rows(e["lag"][:10], lambda r: [r["name"]])
    att = e["attention"]
    note = "" if att["available"] else f"<p>Attention is not shown: {html.escape(att['reason'])}.</p>"
    return f"""<h2>What the model looks at</h2>
<p>Permutation importance: for each feature, feature family and lag, its values are permuted across symbols within
each forecast minute, and the loss of skill is measured (ret_1h IC and rank IC drop, vol_10m QLIKE rise; positive =
the model uses it). Mean over dates with a 95% t-interval. Sample: {html.escape(e["sampling"]["text"])}
({sum(e["sampling"]["windows_per_date"]):,} windows); backend {html.escape(e["backend"])};
{_fmt(e["seconds_per_date"], 3)} s per date. Unpermuted skill on the sample: IC {_ci(base["ret_ic"])},
rank IC {_ci(base["ret_rank_ic"])}, QLIKE {_ci(base["vol_qlike"])}.</p>
{_table(["family", "features", *HEADER], families)}
{img["importance_families.png"]}
{_table(["feature", *HEADER], features)}
{img["importance_features.png"]}
<p>Lags: lag 0 is the forecast minute, lag 29 the window's first minute; all features of the lag are permuted
together. The right panel shows where the forecast minute's query attends (mean weight; dashed: uniform).</p>
{_table(["lag", *HEADER], lags)}
{img["importance_lags.png"]}
{note}
"""

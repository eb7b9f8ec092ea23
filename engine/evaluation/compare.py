"""``tthf-eval --compare``: two prediction sets of one run on the same dates, in one report.

A prediction set is one folder of predictions files (``inference/`` or ``inference/NAME/``,
``tthf-run --predictions NAME``): fp32 beside bf16 or int8, or two backends. Each set is scored
by ``evaluate_run`` as it always is (its own evaluation folder and report), then this module
puts the two side by side in ``evaluation/<name>/``:

- every score of both sets and their difference (``other - base``): each numeric value of the
  ret_1h, vol_10m, ret_conf and vol_conf sections of metrics.json (per-minute and per-decile
  series left out);
- the row-level differences, from the files themselves: rows are matched on (ts, symbol);
  per output the largest absolute difference and its 99th percentile, and the rows found in
  one set only (never joined away silently). The percentile is pooled over every date from a
  histogram with 40 log-spaced bins per decade, so a year of dense files needs no more memory
  than one date; it is the upper edge of its bin, an upper bound within 6% of the exact value.

Dates scored in one set only are listed; the row comparison covers the dates with a file in both.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.evaluation import report
from tthf.engine.evaluation.evaluate import DateOutcome, EvalResult, evaluate_run, prediction_formats
from tthf.engine.predictions import decode
from tthf.engine.runs import EVALUATION_DIR, Run, output_key
from tthf.engine.store import Store
from tthf.errors import UsageError

#: the metrics.json sections whose numbers are compared
SECTIONS = ("ret_1h", "vol_10m", "ret_conf", "vol_conf")
#: absolute-difference histogram: 0, then 40 bins per decade from 1e-10 to 1e3 (anything larger: the last bin)
EDGES = np.concatenate([[0.0], np.geomspace(1e-10, 1e3, 13 * 40 + 1)])
KEYS = ["ts", "symbol"]


@dataclass
class CompareResult:
    """Both sets' evaluations and the comparison folder."""

    base: EvalResult
    other: EvalResult
    name: str
    uri: str  # the comparison folder
    comparison: dict[str, Any]
    seconds: float

    @property
    def exit_code(self) -> int:
        return max(self.base.exit_code, self.other.exit_code)


def flat_scores(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Every numeric value of the compared sections, keyed by its dotted path (lists left out)."""
    out: dict[str, float | None] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            out[path] = float(node)
        elif node is None:
            out[path] = None

    for section in SECTIONS:
        walk(metrics[section], section)
    return out


def score_differences(base: dict[str, Any], other: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per score: both values and ``other - base`` (None where either is missing)."""
    a, b = flat_scores(base), flat_scores(other)
    rows = []
    for key in [*a, *(k for k in b if k not in a)]:
        x, y = a.get(key), b.get(key)
        diff = y - x if x is not None and y is not None else None
        rows.append({"score": key, "base": x, "other": y, "difference": diff})
    return rows


class RowDifferences:
    """Row-level differences of two sets, accumulated date by date."""

    def __init__(self) -> None:
        self.counts = {name: np.zeros(len(EDGES), dtype=np.int64) for name in OUTPUT_NAMES}
        self.max = dict.fromkeys(OUTPUT_NAMES, 0.0)
        self.nan_mismatch = dict.fromkeys(OUTPUT_NAMES, 0)
        self.matched = self.only_base = self.only_other = 0
        self.per_date: list[dict[str, Any]] = []

    def add(self, day: str, base: pl.DataFrame, other: pl.DataFrame) -> None:
        """Match one date's rows on (ts, symbol) and add their differences."""
        marked = [f.select([*KEYS, *OUTPUT_NAMES]).with_columns(pl.lit(True).alias("_in")) for f in (base, other)]
        joined = marked[0].join(marked[1], on=KEYS, how="full", suffix="_other", coalesce=True)
        in_base, in_other = joined["_in"].fill_null(False), joined["_in_other"].fill_null(False)
        both = (in_base & in_other).to_numpy()
        matched, only_base, only_other = (
            int(both.sum()),
            int((in_base & ~in_other).sum()),
            int((in_other & ~in_base).sum()),
        )
        row: dict[str, Any] = {"date": day, "matched": matched, "only_base": only_base, "only_other": only_other}
        for name in OUTPUT_NAMES:
            x = joined[name].to_numpy()[both].astype(np.float64)
            y = joined[f"{name}_other"].to_numpy()[both].astype(np.float64)
            finite = np.isfinite(x) & np.isfinite(y)
            self.nan_mismatch[name] += int((np.isfinite(x) != np.isfinite(y)).sum())
            diff = np.abs(x[finite] - y[finite])
            self.counts[name] += np.bincount(np.searchsorted(EDGES, diff, side="right") - 1, minlength=len(EDGES))
            biggest = float(diff.max()) if len(diff) else 0.0
            self.max[name] = max(self.max[name], biggest)
            row[f"{name}_max"] = biggest
        self.matched += matched
        self.only_base += only_base
        self.only_other += only_other
        self.per_date.append(row)

    def p99(self, name: str) -> float:
        """The pooled 99th percentile of ``name``'s absolute difference: the upper edge of its histogram bin."""
        counts = self.counts[name]
        total = int(counts.sum())
        if not total:
            return 0.0
        index = int(np.searchsorted(np.cumsum(counts), 0.99 * total))
        upper = float(EDGES[index + 1]) if index + 1 < len(EDGES) else np.inf  # the last bin is open above
        return min(upper, self.max[name])

    def summary(self) -> dict[str, Any]:
        return {
            "matched_rows": self.matched,
            "only_base_rows": self.only_base,
            "only_other_rows": self.only_other,
            "outputs": {
                name: {"max_abs": self.max[name], "p99_abs": self.p99(name), "nan_in_one_only": self.nan_mismatch[name]}
                for name in OUTPUT_NAMES
            },
            "per_date": self.per_date,
        }


def row_differences(run: Run, days: list[str], base: str, other: str) -> dict[str, Any]:
    """The row-level differences of the two sets on ``days`` (ISO dates with a file in both)."""
    formats = {name: prediction_formats(run, name) for name in (base, other)}
    acc = RowDifferences()
    for iso in days:
        day = dt.date.fromisoformat(iso)
        frames = [decode(run.read_bytes(output_key(day, formats[s][day], s)), formats[s][day]) for s in (base, other)]
        acc.add(iso, *frames)
    return acc.summary()


def default_name(base_eval: str, other: str) -> str:
    """``2024-02_vs_int8``: the base set's evaluation name and the other set."""
    return f"{base_eval}_vs_{other}"


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def compare_run(
    run: Run,
    dates: str,
    base: str,
    other: str,
    *,
    data: Store | str | None = None,
    name: str | None = None,
    endpoint_url: str | None = None,
    on_start: Callable[[int], None] | None = None,
    on_date: Callable[[DateOutcome], None] | None = None,
) -> CompareResult:
    """Score prediction sets ``base`` and ``other`` on ``dates`` (each into its own evaluation folder)
    and write their comparison to ``{run}/evaluation/<name>/`` (default ``<base's name>_vs_<other>``)."""
    if base == other:
        raise UsageError(f"--compare {other}: that is the set being scored; name another prediction set")
    if name is not None and not _NAME.match(name):
        raise UsageError(f"invalid --name {name!r}: use letters, digits, '.', '_' or '-'")
    started = time.perf_counter()

    def doubled(n: int) -> None:
        if on_start:
            on_start(2 * n)

    kwargs: dict[str, Any] = {"data": data, "endpoint_url": endpoint_url, "on_date": on_date}
    a = evaluate_run(run, dates, predictions=base, on_start=doubled, **kwargs)
    b = evaluate_run(run, dates, predictions=other, **kwargs)
    scored_a, scored_b = set(a.metrics["dates"]["scored"]), set(b.metrics["dates"]["scored"])
    both = sorted(scored_a & scored_b)
    comparison = {
        "run": a.metrics["run"],
        "base": {"predictions": base, "evaluation": a.name, "uri": a.uri},
        "other": {"predictions": other, "evaluation": b.name, "uri": b.uri},
        "dates": {
            "spec": dates,
            "both": both,
            "only_base": sorted(scored_a - scored_b),
            "only_other": sorted(scored_b - scored_a),
        },
        "scores": score_differences(a.metrics, b.metrics),
        "rows": row_differences(run, both, base, other),
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    name = name or default_name(a.name, other)
    folder = run.store.child(f"{EVALUATION_DIR}/{name}")
    folder.write_text("comparison.json", json.dumps(comparison, indent=1, sort_keys=True) + "\n")
    folder.write_text("report.html", render_html(comparison))
    return CompareResult(a, b, name, folder.uri(), comparison, time.perf_counter() - started)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def render_html(c: dict[str, Any]) -> str:
    """The comparison page: dates, row-level differences, every score of both sets and their difference."""
    base, other = html.escape(c["base"]["predictions"]), html.escape(c["other"]["predictions"])
    rows = c["rows"]
    out_rows = "".join(
        f"<tr><td>{n}</td><td>{_num(v['max_abs'])}</td><td>{_num(v['p99_abs'])}</td><td>{v['nan_in_one_only']}</td></tr>"
        for n, v in rows["outputs"].items()
    )
    score_rows = "".join(
        f"<tr><td>{html.escape(r['score'])}</td><td>{_num(r['base'])}</td><td>{_num(r['other'])}</td>"
        f"<td>{_num(r['difference'])}</td></tr>"
        for r in c["scores"]
    )
    d = c["dates"]
    only = f"only in {base}: {', '.join(d['only_base']) or 'none'}; only in {other}: {', '.join(d['only_other']) or 'none'}"
    links = " · ".join(
        f'<a href="../{html.escape(s["evaluation"])}/report.html">{html.escape(s["predictions"])} report</a>'
        for s in (c["base"], c["other"])
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tthf-eval: {base} vs {other}</title>
<style>{report.CSS}</style></head><body>
<h1>Prediction sets compared: {other} against {base}</h1>
<p class="meta">run <b>{html.escape(c["run"])}</b> · dates {html.escape(d["spec"])} · {len(d["both"])} date(s) in
both · {only} · {html.escape(c["created"])} · {links}</p>
<h2>Row-level differences</h2>
<p>Rows matched on (ts, symbol): {rows["matched_rows"]:,}; rows only in {base}: {rows["only_base_rows"]:,};
only in {other}: {rows["only_other_rows"]:,}. The 99th percentile is pooled over the dates, an upper bound
within 6%.</p>
<table><tr><th>output</th><th>max |diff|</th><th>p99 |diff|</th><th>NaN in one set only</th></tr>{out_rows}</table>
<h2>Scores ({other} &minus; {base})</h2>
<table><tr><th>score</th><th>{base}</th><th>{other}</th><th>difference</th></tr>{score_rows}</table>
<p class="meta">comparison.json beside this page holds every number shown here.</p>
</body></html>
"""

"""The golden check: tthf's predictions of the user's dates against the user's own, on exactly the same keys.

For each ``[golden]`` date, tthf predicts in the declared mode (dense, or sparse forward-filled
as ``tthf-run`` writes it) through the same code path as ``tthf-run`` (``DayHost`` and
``DayPredictor``) with the served graph, and the user's file (CSV or Parquet, ``{date}`` in
its path) is compared on (symbol, minute): rows only the user has are ``missing``, rows only
tthf has are ``extra``, both counted and never joined away (design.md, "Golden rows"). The
matched rows are held to the fp32 bar in output units, per output (max and p99.9 of the
absolute difference). The check passes when nothing is missing or extra and every output is
within the bar; the rows beyond it are listed.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field

import polars as pl

from tthf.engine.config import OUTPUT_NAMES, RunConfig
from tthf.engine.features import Scalers
from tthf.engine.model.interface import tolerances
from tthf.engine.runtime.backends import Backend
from tthf.engine.runtime.day import DayHost, DayPredictor
from tthf.engine.store import Store
from tthf.errors import ModelImportError
from tthf.export.importing.sources import read_uri
from tthf.export.importing.spec import Golden
from tthf.export.validate import Comparison, compare

#: how many differing rows the report lists per date
SHOWN_ROWS = 10
_KEY = ("symbol", "ts")


@dataclass
class GoldenDay:
    """One date's comparison: matched, missing (user only) and extra (tthf only) rows; per-output results."""

    date: str
    matched: int
    missing: int
    extra: int
    results: list[Comparison]
    differing: pl.DataFrame  # rows beyond the bar: symbol, ts, output, tthf, user, diff
    missing_rows: pl.DataFrame = field(default_factory=pl.DataFrame)
    extra_rows: pl.DataFrame = field(default_factory=pl.DataFrame)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.extra and all(r.passed for r in self.results)


@dataclass
class GoldenReport:
    mode: str
    days: list[GoldenDay]

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.days)

    def table(self) -> str:
        """Per date and output: rows matched, missing, extra, max and p99.9 |tthf - user|, rows beyond the bar."""
        lines = [f"golden check ({self.mode}): tthf vs the user's predictions on the same (symbol, minute) keys"]
        lines.append(
            f"{'date':<11} {'output':<9} {'rows':>6} {'missing':>7} {'extra':>6} {'max_abs':>9} "
            f"{'p99.9_abs':>9} {'beyond':>6}  ok"
        )
        for d in self.days:
            ok = "yes" if d.passed else "NO"
            head = f"{d.date:<11} {{:<9}} {d.matched:>6} {d.missing:>7} {d.extra:>6}"
            if not d.results:
                lines.append(f"{head.format('-')} {'-':>9} {'-':>9} {'-':>6}  {ok}")
            for r in d.results:
                lines.append(f"{head.format(r.output)} {r.max_abs:>9.2e} {r.q_abs:>9.2e} {r.violations:>6}  {ok}")
            for label, rows in (("missing", d.missing_rows), ("extra", d.extra_rows)):
                if rows.height:
                    lines.append(f"  {label} rows of {d.date}: {_spans(rows)}")
            if d.differing.height:
                lines.append(f"  rows beyond the bar on {d.date} (first {SHOWN_ROWS} of {d.differing.height}):")
                lines += [f"    {line}" for line in _rows(d.differing.head(SHOWN_ROWS))]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "passed": self.passed,
            "dates": [
                {
                    "date": d.date,
                    "matched": d.matched,
                    "missing": d.missing,
                    "extra": d.extra,
                    "passed": d.passed,
                    "results": [r.to_dict() for r in d.results],
                    "differing_rows": d.differing.height,
                }
                for d in self.days
            ],
        }


def check_golden(
    golden: Golden, cfg: RunConfig, scalers: Scalers, backend: Backend, data: Store, *, batch_size: int = 4096
) -> GoldenReport:
    """tthf's predictions of each golden date (``backend``: the served graph) against the user's file."""
    host = DayHost.from_config(cfg, scalers, data)
    stride = 1 if golden.mode == "dense" else cfg.sample_every
    predictor = DayPredictor(cfg, backend, stride=stride, batch_size=batch_size)
    timezone = cfg.feature_files.timezone if cfg.feature_files else "UTC"
    days = []
    for iso in golden.dates:
        frame = predictor.predict(host.features(host.read(dt.date.fromisoformat(iso)))).frame
        assert frame is not None
        user = read_golden(golden, iso, timezone)
        days.append(compare_day(iso, frame, user, cfg))
    return GoldenReport(golden.mode, days)


def read_golden(golden: Golden, iso: str, timezone: str) -> pl.DataFrame:
    """The user's predictions of ``iso``: symbol, ts (UTC) and the tthf outputs they name, one row per key."""
    uri = golden.path.replace("{date}", iso)
    data = read_uri(uri)
    try:
        frame = pl.read_parquet(io.BytesIO(data)) if uri.endswith(".parquet") else pl.read_csv(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ModelImportError(f"{uri}: not a readable CSV or Parquet file ({exc}); re-write it") from exc
    wanted = {golden.symbol: "symbol", golden.ts: "ts", **{col: name for name, col in golden.columns.items()}}
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise ModelImportError(
            f"{uri}: column(s) {absent} named by [golden] are missing; the file has {frame.columns}; "
            "fix golden.symbol, golden.ts or golden.columns"
        )
    frame = frame.select([pl.col(c).alias(n) for c, n in wanted.items()])
    frame = frame.with_columns(_utc(frame["ts"], uri, timezone), *[pl.col(n).cast(pl.Float64) for n in golden.columns])
    if frame.select(pl.struct(*_KEY).is_duplicated().any()).item():
        raise ModelImportError(f"{uri}: rows repeat a (symbol, ts); the user's file must have one row per key")
    return frame


def _utc(ts: pl.Series, uri: str, timezone: str) -> pl.Series:
    """ISO 8601 with a UTC offset, or naive in ``timezone``, as UTC microseconds."""
    if ts.dtype == pl.String:
        try:
            ts = ts.str.to_datetime(time_unit="us")
        except pl.exceptions.PolarsError as exc:
            raise ModelImportError(f"{uri}: ts values are not ISO 8601 timestamps ({exc})") from exc
    if not isinstance(ts.dtype, pl.Datetime):
        raise ModelImportError(f"{uri}: ts has type {ts.dtype}; write ISO 8601 timestamps")
    zone = ts.dtype.time_zone
    ts = ts.cast(pl.Datetime("us", zone))
    if zone is None:
        ts = ts.dt.replace_time_zone(timezone)
    return ts.dt.convert_time_zone("UTC").alias("ts")


def compare_day(iso: str, tthf: pl.DataFrame, user: pl.DataFrame, cfg: RunConfig) -> GoldenDay:
    """The full outer join on (symbol, ts): counts of both sides' unmatched rows, the matched rows compared."""
    names = [n for n in OUTPUT_NAMES if n in user.columns]
    ours = tthf.select(*_KEY, *names).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")), _ours=pl.lit(True))
    theirs = user.with_columns(_user=pl.lit(True))
    joined = ours.join(theirs, on=list(_KEY), how="full", coalesce=True, suffix="_user")
    matched = joined.filter(pl.col("_ours").is_not_null() & pl.col("_user").is_not_null()).sort("ts", "symbol")
    missing = joined.filter(pl.col("_ours").is_null()).select(_KEY)
    extra = joined.filter(pl.col("_user").is_null()).select(_KEY)
    bars = tolerances("fp32", cfg.model)
    results: list[Comparison] = []
    if matched.height:
        results = compare(
            {n: matched[f"{n}_user"].to_numpy() for n in names},
            {n: matched[n].to_numpy() for n in names},
            artifact="golden",
            backend="tthf vs user",
            inputs=iso,
            precision="fp32",
            tolerance={n: bars[n] for n in names},
        )
    parts = []
    for n in names:
        bar = bars[n]
        diff = (pl.col(n) - pl.col(f"{n}_user")).abs()
        beyond = matched.filter(diff > bar.atol + bar.rtol * pl.col(f"{n}_user").abs())
        parts.append(
            beyond.select(
                *_KEY,
                pl.lit(n).alias("output"),
                pl.col(n).cast(pl.Float64).alias("tthf"),
                pl.col(f"{n}_user").alias("user"),
                diff.alias("diff"),
            )
        )
    differing = pl.concat(parts).sort("symbol", "ts", "output")
    return GoldenDay(iso, matched.height, missing.height, extra.height, results, differing, missing, extra)


def _spans(rows: pl.DataFrame) -> str:
    """Rows as per-symbol counts and time spans: 'JTX 45 (14:59..15:43 UTC)'."""
    spans = rows.group_by("symbol").agg(pl.len(), pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi"))
    return ", ".join(f"{s} {n} ({lo:%H:%M}..{hi:%H:%M} UTC)" for s, n, lo, hi in spans.sort("symbol").iter_rows())


def _rows(rows: pl.DataFrame) -> list[str]:
    return [
        f"{s} {ts:%Y-%m-%d %H:%M} {out}: tthf {a:.6g} user {b:.6g} |diff| {d:.2e}"
        for s, ts, out, a, b, d in rows.iter_rows()
    ]


def differing_keys(day: GoldenDay) -> set[tuple[str, dt.datetime]]:
    """The (symbol, ts) keys whose values differ beyond the bar in any output (what a test checks exactly)."""
    return {(s, t) for s, t in day.differing.select(_KEY).iter_rows()}


__all__ = ["GoldenDay", "GoldenReport", "check_golden", "compare_day", "differing_keys", "read_golden"]

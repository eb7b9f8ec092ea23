"""``tthf-check``'s library function: what ``tthf-run`` would make of each date, without a model.

Every date goes through the very code a run uses, ``marketdata.read_day`` then
``features.build_day``, so a rule cannot say one thing here and another in training,
batch or real time; this module only reads off the outcome: whether the date can be
read (the reason if not), its rows, symbols, session coverage (the share of
(symbol, minute) cells with a usable quote: the mask), the per-rule cleaning counts, the
dense windows ``tthf-run --dense`` would predict, the symbols that get no prediction
with the reason, and the warnings the build logs (bars that look stamped with their
minute's end). Why a symbol has no row or no usable quote comes from ``clean_rows`` run
on that symbol's rows alone, so the reason is the cleaning's own counts.
docs/data.md ("Checking a data root") documents the report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tthf.engine.config import DEFAULT_CALENDAR, SEQ_LEN, RunConfig
from tthf.engine.data import marketdata
from tthf.engine.data.dates import parse_dates
from tthf.engine.data.featurefiles import input_dates, read_feature_day
from tthf.engine.features.build import build_day
from tthf.engine.features.clean import clean_rows, end_stamp_warning
from tthf.engine.features.day import DayFeatures
from tthf.engine.features.files import file_grid, fill
from tthf.engine.store import Store, as_store, open_store
from tthf.engine.windows import window_positions
from tthf.errors import DataError, StoreError, UsageError

#: the cleaning counts that explain a symbol without a row in the session, or without a usable quote
_NO_ROW_RULES = ("null_key", "extended_hours")
_NO_QUOTE_RULES = ("quote_null", "quote_nonfinite", "quote_nonpositive", "quote_crossed")

Wrap = Callable[[list[dt.date]], Iterable[dt.date]]


@dataclass
class DateCheck:
    """One date as ``tthf-run`` would see it; ``status`` is "ok", "failed" (it would fail) or "no_data"."""

    date: str
    status: str
    reason: str = ""
    exit_code: int = 0  # the error's exit code when failed (3 data, 4 store)
    rows: int = 0  # rows read (exact duplicates and wrong-partition rows already dropped)
    symbols: int = 0  # symbols on the day's grid: every symbol with a row in the regular session
    minutes: int = 0  # regular-session minutes
    coverage: float = 0.0  # share of grid cells (symbol, minute) with a usable quote
    windows: int = 0  # rows ``tthf-run --dense`` would write
    counts: dict[str, int] = field(default_factory=dict)  # read counts, then the cleaning counts
    left_out: dict[str, str] = field(default_factory=dict)  # symbol -> why it gets no prediction
    warnings: list[str] = field(default_factory=list)  # what the build warns about (tthf-run logs the same)
    seconds: float = 0.0
    nulls: dict[str, int] = field(default_factory=dict)  # a run's feature files: null values per column read


@dataclass
class CheckReport:
    data_root: str
    spec: str
    seq_len: int
    dates: list[DateCheck]
    seconds: float

    def by_status(self, status: str) -> list[DateCheck]:
        return [d for d in self.dates if d.status == status]

    @property
    def exit_code(self) -> int:
        """0 when every date with data is readable, else the largest exit code of a failed date."""
        return max((d.exit_code for d in self.by_status("failed")), default=0)

    def totals(self) -> dict[str, int]:
        """The counts summed over the readable dates, in their order."""
        total: dict[str, int] = {}
        for d in self.by_status("ok"):
            for key, value in d.counts.items():
                total[key] = total.get(key, 0) + value
        return total

    def to_dict(self) -> dict:
        return {
            "data_root": self.data_root,
            "dates_spec": self.spec,
            "seq_len": self.seq_len,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            "totals": self.totals(),
            "dates": [dataclasses.asdict(d) for d in self.dates],
        }


def _read(store: Store, day: dt.date, calendar: str) -> tuple[pl.DataFrame, dict[str, int]]:
    counts: dict[str, int] = {}
    return marketdata.read_day(store, day, counts=counts, calendar=calendar), counts


def _left_out(
    raw: pl.DataFrame, feats: DayFeatures, per_symbol: np.ndarray, seq_len: int, source: str, calendar: str
) -> dict[str, str]:
    """Every symbol of the raw rows that gets no prediction, and why, sorted by symbol."""
    on_grid = set(feats.symbols)
    no_row = sorted(set(raw.get_column("symbol").drop_nulls().unique().to_list()) - on_grid)
    no_quote = [s for i, s in enumerate(feats.symbols) if not feats.mask[i].any()]
    reasons = {}
    explain = raw.filter(pl.col("symbol").is_in(no_row + no_quote)).partition_by("symbol", as_dict=True)
    for (symbol,), rows in explain.items():
        counts = clean_rows(rows, feats.date, [symbol], source, calendar=calendar).counts
        what, rules = (
            ("no usable quote all day", _NO_QUOTE_RULES)
            if symbol in on_grid
            else ("no row in the regular session", _NO_ROW_RULES)
        )
        reasons[symbol] = f"{what} ({', '.join(f'{k} {counts[k]}' for k in rules if counts[k])})"
    for i, symbol in enumerate(feats.symbols):
        usable = int(feats.mask[i].sum())
        if usable and not per_symbol[i]:
            reasons[symbol] = (
                f"usable quote on {usable} of {len(feats.minutes)} minutes, never {seq_len} in a row: no full window"
            )
    return dict(sorted(reasons.items()))


def _failed(day: dt.date, exc: DataError | StoreError, started: float) -> DateCheck:
    """A date that would fail in tthf-run: the error, on one line, is its reason."""
    return DateCheck(
        day.isoformat(),
        "failed",
        reason=" ".join(str(exc).split()),
        exit_code=exc.exit_code,
        seconds=round(time.perf_counter() - started, 4),
    )


def _evaluate(
    day: dt.date, read: Callable[[], tuple[pl.DataFrame, dict[str, int]]], source: str, seq_len: int, calendar: str
) -> DateCheck:
    """``read`` the date and build its features as tthf-run does; an error is the date's reason."""
    started = time.perf_counter()
    try:
        raw, counts = read()
        feats = build_day(raw, day, source=source, calendar=calendar)
    except (DataError, StoreError) as exc:
        return _failed(day, exc, started)
    sym, _ = window_positions(feats.mask, seq_len, 1)
    per_symbol = np.bincount(sym, minlength=len(feats.symbols))
    return DateCheck(
        day.isoformat(),
        "ok",
        rows=feats.counts["rows_in"],
        symbols=len(feats.symbols),
        minutes=len(feats.minutes),
        coverage=round(float(feats.mask.mean()), 6),
        windows=int(per_symbol.sum()),
        counts={**counts, **feats.counts},
        left_out=_left_out(raw, feats, per_symbol, seq_len, source, calendar),
        warnings=[w for w in (end_stamp_warning(raw, day, source, calendar),) if w],
        seconds=round(time.perf_counter() - started, 4),
    )


def check_day(
    root: Store | str, day: dt.date, *, seq_len: int = SEQ_LEN, calendar: str = DEFAULT_CALENDAR
) -> DateCheck:
    """What tthf-run would make of ``day`` under ``root`` (a date without files is a failed ``NoDataError``)."""
    store = as_store(root)
    return _evaluate(day, lambda: _read(store, day, calendar), store.uri(marketdata.partition(day)), seq_len, calendar)


def check_run(
    cfg: RunConfig, data: Store | str, spec: str, *, wrap: Wrap | None = None, endpoint_url: str | None = None
) -> CheckReport:
    """``tthf-check --run``: each date of ``spec`` as the run would read it, from the run's own sources.

    A run without feature files is ``check_data`` of its raw root at its window length and
    calendar. A run with them reads each date's feature files (and raw bars for its computed
    names) through the run's readers, and reports rows, symbols, coverage (the share of
    session cells with a file row), the null values of each column read and the dense
    windows after ``fill``: the windows ``tthf-run --dense`` would predict.
    """
    store = as_store(data)
    files = cfg.feature_files
    if files is None:
        return check_data(store, spec, seq_len=cfg.seq_len, wrap=wrap, calendar=cfg.calendar)
    started = time.perf_counter()
    file_store = open_store(files.root, endpoint_url=endpoint_url)
    computed = bool(cfg.computed_names)
    available = input_dates(store, files, computed=computed)
    selection = parse_dates(spec, available, source=file_store.uri(), calendar=cfg.calendar)
    results = [
        DateCheck(d.isoformat(), "no_data", reason=f"no feature file matches {file_store.uri(files.path)}")
        for d in selection.missing
    ]
    for day in wrap(selection.dates) if wrap else selection.dates:
        results.append(_evaluate_files(day, cfg, file_store, store if computed else None))
    results.sort(key=lambda d: d.date)
    where = file_store.uri(files.path) + (f" + raw bars {store.uri()}" if computed else "")
    return CheckReport(where, spec, cfg.seq_len, results, time.perf_counter() - started)


def _evaluate_files(day: dt.date, cfg: RunConfig, file_store: Store, raw_store: Store | None) -> DateCheck:
    """One date of a run with feature files: read as the run reads it, filled as it fills, its windows counted."""
    files = cfg.feature_files
    assert files is not None
    started = time.perf_counter()
    counts: dict[str, int] = {}
    columns = list(dict.fromkeys([*files.columns, *files.labels.values()]))
    try:
        rows = read_feature_day(file_store, files, day, columns, counts=counts)
        feats = None
        if raw_store is not None:
            raw, raw_counts = _read(raw_store, day, cfg.calendar)
            feats = build_day(raw, day, source=raw_store.uri(marketdata.partition(day)), calendar=cfg.calendar)
            counts |= raw_counts | feats.counts
        grid = file_grid(rows, day, files.columns, symbols=feats.symbols if feats else None, calendar=cfg.calendar)
    except (DataError, StoreError) as exc:
        return _failed(day, exc, started)
    _, mask = fill(grid.values, files.fill, grid.present)
    if feats is not None:
        mask &= feats.mask
    sym, _ = window_positions(mask, cfg.seq_len, 1)
    per_symbol = np.bincount(sym, minlength=len(grid.symbols))
    return DateCheck(
        day.isoformat(),
        "ok",
        rows=rows.height,
        symbols=len(grid.symbols),
        minutes=len(grid.minutes),
        coverage=round(float(grid.present.mean()) if grid.present.size else 0.0, 6),
        windows=int(per_symbol.sum()),
        counts=counts | grid.counts,
        left_out={s: "no full window" for s, n in zip(grid.symbols, per_symbol) if not n},
        seconds=round(time.perf_counter() - started, 4),
        nulls={name: rows[name].null_count() for name in columns},
    )


def check_data(
    root: Store | str, spec: str, *, seq_len: int = SEQ_LEN, wrap: Wrap | None = None, calendar: str = DEFAULT_CALENDAR
) -> CheckReport:
    """Check every date of ``spec`` (tthf-run's ``--dates``) under ``root``, reading one date ahead.

    Trading days the spec covers without data are reported as "no_data", as tthf-run does.
    ``wrap`` wraps the list of dates to check (a progress bar); a spec that selects no
    date with data raises ``NoDataError``.
    """
    if seq_len < 1:
        raise UsageError(f"--seq-len must be >= 1, got {seq_len}")
    started = time.perf_counter()
    store = as_store(root)
    selection = parse_dates(spec, marketdata.list_dates(store), source=store.uri(), calendar=calendar)
    days = selection.dates
    results = [
        DateCheck(d.isoformat(), "no_data", reason=f"no data under {store.uri(marketdata.partition(d))}")
        for d in selection.missing
    ]
    with ThreadPoolExecutor(1) as pool:  # the next date is read while this one is cleaned
        reads: dict[int, Future] = {}
        for i, day in enumerate(wrap(days) if wrap else days):
            for j in (i, i + 1):
                if j < len(days) and j not in reads:
                    reads[j] = pool.submit(_read, store, days[j], calendar)
            results.append(_evaluate(day, reads.pop(i).result, store.uri(marketdata.partition(day)), seq_len, calendar))
    results.sort(key=lambda d: d.date)
    return CheckReport(store.uri(), spec, seq_len, results, time.perf_counter() - started)

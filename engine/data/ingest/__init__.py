"""Vendor minute bars -> the raw schema, one atomically written partition per trading date.

Two formats (docs/data.md, "Ingesting vendor files"):

- ``ingest_dbn``: Databento DBN files, ``bbo-1m`` or ``cbbo-1m`` quotes with ``ohlcv-1m``
  trades (``dbn.py``);
- ``ingest_csv``: paired minute quote bars and trade bars in CSV (``csv_bars.py``).

Both read every input, join the quote side with the trade side (``bars.pair``: missing
sides stay null, never invented), validate every date and only then write
(``partitions.write_partitions``). The returned ``IngestSummary`` says what was written and
every row that was left out, and why.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from tthf.engine.data.calendar import NEW_YORK, is_trading_day
from tthf.engine.data.ingest import csv_bars, dbn
from tthf.engine.data.ingest.bars import DROP_REASONS, pair
from tthf.engine.data.ingest.csv_bars import CsvLayout, load_mapping, parse_mapping
from tthf.engine.data.ingest.partitions import DateWritten, Progress, no_progress, write_partitions
from tthf.engine.data.ingest.sources import Source, expand
from tthf.engine.store import Store, as_store
from tthf.errors import DataError, UsageError

__all__ = [
    "DROP_REASONS",
    "CsvLayout",
    "DateWritten",
    "IngestSummary",
    "ingest_csv",
    "ingest_dbn",
    "load_mapping",
    "parse_mapping",
]

_QUOTES_ONLY = (
    "without trade bars every minute would say nothing traded (volume 0, null trade prices), "
    "which the volume features would learn as fact"
)


@dataclass
class IngestSummary:
    """What a conversion wrote and what it left out."""

    out: str
    inputs: list[str]
    dates: list[DateWritten]
    symbols: int  # distinct symbols over the dates written
    dropped: dict[str, int]  # reason (DROP_REASONS) -> rows left out
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.dates)


def _finish(
    rows: pl.DataFrame,
    out: Store,
    sources: list[str],
    drops: Counter[str],
    notes: list[str],
    *,
    overwrite: bool,
    progress: Progress,
    started: float,
) -> IngestSummary:
    written, symbols = write_partitions(rows, out, drops, overwrite=overwrite, progress=progress)
    return IngestSummary(
        out.uri(),
        sources,
        written,
        symbols,
        {k: v for k, v in drops.items() if v},
        notes,
        time.perf_counter() - started,
    )


def ingest_dbn(
    inputs: Sequence[str],
    out: Store | str,
    *,
    quotes_only: bool = False,
    publisher: int | None = None,
    overwrite: bool = False,
    endpoint_url: str | None = None,
    progress: Progress = no_progress,
) -> IngestSummary:
    """Convert Databento ``bbo-1m``/``cbbo-1m`` (+ ``ohlcv-1m``) DBN files; each file's schema says its side."""
    started, drops = time.perf_counter(), Counter[str]()
    sources = expand(inputs, dbn.SUFFIXES, endpoint_url=endpoint_url)
    files = [dbn.decode(s.read(), s.uri) for s in progress(sources, "read", len(sources), "file")]
    quote_files = [(i, f) for i, f in enumerate(files) if f.schema in dbn.QUOTE_SCHEMAS]
    trade_files = [(i, f) for i, f in enumerate(files) if f.schema in dbn.TRADE_SCHEMAS]
    if not quote_files:
        raise UsageError(f"no quote file among the inputs (schemas {', '.join(dbn.QUOTE_SCHEMAS)}); tthf needs quotes")
    quotes = pl.concat([dbn.quotes_frame(f, i, publisher, drops) for i, f in quote_files])
    trades = pl.concat([dbn.trades_frame(f, i, publisher, drops) for i, f in trade_files]) if trade_files else None
    notes = _check_trades(quotes, [f for _, f in trade_files], quotes_only)
    rows = pair(quotes, trades, [s.uri for s in sources], drops)
    return _finish(
        rows,
        as_store(out),
        [s.uri for s in sources],
        drops,
        notes,
        overwrite=overwrite,
        progress=progress,
        started=started,
    )


def _check_trades(quotes: pl.DataFrame, trade_files: list[dbn.DbnFile], quotes_only: bool) -> list[str]:
    """Trades must cover every quoted trading day's session, unless the user asked for quotes only."""
    days = quotes.select(pl.col("ts").dt.convert_time_zone(str(NEW_YORK)).dt.date().unique()).to_series().to_list()
    days = sorted(d for d in days if is_trading_day(d))
    missing = dbn.uncovered_days(days, trade_files) if trade_files else days
    if not missing:
        return []
    if not quotes_only:
        which = "no ohlcv-1m file was given" if not trade_files else "the ohlcv-1m files do not cover their sessions"
        raise DataError(
            f"{len(missing)} quoted date(s) ({missing[0]}..{missing[-1]}) have no trade bars: {which}; "
            f"{_QUOTES_ONLY}. Add the ohlcv-1m files, or pass --quotes-only to write them anyway"
        )
    return [f"--quotes-only: {len(missing)} date(s) without trade bars have volume 0 and null trade prices"]


def ingest_csv(
    quotes: Sequence[str],
    trades: Sequence[str],
    out: Store | str,
    *,
    layout: CsvLayout | None = None,
    quotes_only: bool = False,
    overwrite: bool = False,
    endpoint_url: str | None = None,
    progress: Progress = no_progress,
) -> IngestSummary:
    """Convert paired CSV minute quote bars and trade bars (a file with both kinds may be in both lists)."""
    started, drops = time.perf_counter(), Counter[str]()
    layout = layout or CsvLayout()
    layout.check()
    if not quotes:
        raise UsageError("no quote files given (--quotes); tthf's features need the bid and ask")
    if not trades and not quotes_only:
        raise UsageError(f"no trade files given (--trades): {_QUOTES_ONLY}; give them, or pass --quotes-only")
    sides: list[tuple[str, Source]] = [
        ("quotes", s) for s in expand(quotes, csv_bars.SUFFIXES, endpoint_url=endpoint_url)
    ]
    sides += [("trades", s) for s in expand(trades, csv_bars.SUFFIXES, endpoint_url=endpoint_url)]
    frames: dict[str, list[pl.DataFrame]] = {"quotes": [], "trades": []}
    for index, (side, source) in enumerate(progress(sides, "read", len(sides), "file")):
        frames[side].append(csv_bars.read_side(source, index, side, layout))
    names = [s.uri for _, s in sides]
    rows = pair(pl.concat(frames["quotes"]), pl.concat(frames["trades"]) if frames["trades"] else None, names, drops)
    notes = ["--quotes-only: no trade files; every row has volume 0 and null trade prices"] if not trades else []
    return _finish(rows, as_store(out), names, drops, notes, overwrite=overwrite, progress=progress, started=started)

"""The day's clean rows on the dense (minutes, symbols) grid, whole or minute by minute.

``DayGrid`` is the one grid of batch and real time: ``from_clean`` takes a whole day's
cleaned rows at once (``build_day``); ``add`` takes the rows that arrived since, cleans
them by the same rules and puts them into their cells, which is what ``RealtimePredictor``
calls each minute. A live feed repeats and corrects rows, so ``add`` works row by row: an
exact repeat is dropped, a row with different values for a (symbol, minute) already seen
is a correction and the later version wins (batch, which sees a file, calls that a
``DataError`` instead; the batch file of a day is its rows' last versions). Both end in
``compute_grid`` on the same arrays, so both give the same bits.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import numpy as np
import polars as pl

from tthf.engine.data.calendar import DEFAULT_CALENDAR, session_minutes
from tthf.engine.features.clean import COUNT_KEYS, QUOTE, TRADE_PRICES, CleanRows, Session, clean_rows
from tthf.engine.features.state import DayState

#: the clean grid's value columns, the input of ``compute_grid``
GRID_COLUMNS = (*QUOTE, *TRADE_PRICES, "volume", "trade_count")


def grid_arrays(rows: pl.DataFrame, n_sym: int, n_minutes: int) -> dict[str, np.ndarray]:
    """The dense grid, (minutes, symbols) per column: each clean row's values in its cell, NaN elsewhere.

    Cleaned columns hold no NaN (non-finite values became null), so NaN marks a missing
    value; a minute without a row has volume 0.
    """
    at = rows.get_column("tid").to_numpy().astype(np.int64) * n_sym + rows.get_column("sid").to_numpy()
    columns: dict[str, np.ndarray] = {}
    for name in GRID_COLUMNS:
        cell = np.full(n_sym * n_minutes, np.nan)
        cell[at] = rows.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()
        columns[name] = cell.reshape(n_minutes, n_sym)
    columns["volume"] = np.nan_to_num(columns["volume"], nan=0.0)
    return columns


def _empty_columns(n_minutes: int, n_sym: int) -> dict[str, np.ndarray]:
    """Columns of symbols without rows yet: NaN everywhere, volume 0."""
    shape = (n_minutes, n_sym)
    return {name: np.zeros(shape) if name == "volume" else np.full(shape, np.nan) for name in GRID_COLUMNS}


class DayGrid:
    """One trading day's clean values so far, the cells filled, and the day statistics (``DayState``)."""

    def __init__(self, day: dt.date, calendar: str = DEFAULT_CALENDAR) -> None:
        self.day = day
        self.calendar = calendar
        self.session = Session.of(day, calendar)
        self.minutes = session_minutes(day, calendar)
        self.symbols: list[str] = []
        self._sid: dict[str, int] = {}
        self.columns = _empty_columns(self.session.n_minutes, 0)
        self.filled = np.zeros((self.session.n_minutes, 0), dtype=np.bool_)
        self.state = DayState()  # resumed minute by minute by compute_grid
        self.rows_in = 0  # regular-session rows received

    @classmethod
    def from_clean(cls, day: dt.date, clean: CleanRows, calendar: str = DEFAULT_CALENDAR) -> DayGrid:
        """The whole day at once from its cleaned rows (the batch path)."""
        grid = cls(day, calendar)
        grid.symbols = list(clean.symbols)
        grid._sid = {s: i for i, s in enumerate(grid.symbols)}
        grid.columns = grid_arrays(clean.rows, len(grid.symbols), clean.n_minutes)
        grid.filled = np.zeros((clean.n_minutes, len(grid.symbols)), dtype=np.bool_)
        grid.filled[clean.rows.get_column("tid").to_numpy(), clean.rows.get_column("sid").to_numpy()] = True
        grid.rows_in = clean.counts["rows_used"]
        return grid

    def add(self, frame: pl.DataFrame, source: str) -> Added:
        """Clean ``frame`` (rows of this day) as batch does and put its rows into the grid, row by row.

        Rows without a key or outside the session are dropped and counted (``counts``). Of
        the rows for one (symbol, minute), in this frame or earlier, an exact repeat is
        dropped (``duplicate_rows``) and a row with other values replaces the earlier one
        (``corrections``): a feed's correction. Returns the counts and the cells that changed,
        from which the day statistics are recomputed (``DayState.invalidate``).
        """
        self.rows_in += frame.height
        frame, repeats, corrections = _last_versions(frame)
        names = sorted(frame.get_column("symbol").drop_nulls().unique().to_list())
        if not names:
            counts = dict.fromkeys(COUNT_KEYS, 0)
            counts.update(rows_in=frame.height, null_key=frame.height)  # no keyed row: no repeat either
            return Added(counts | {"corrections": corrections}, _NO_CELLS, _NO_CELLS, None)
        clean = clean_rows(frame, self.day, names, source, calendar=self.calendar, by_minute=True)
        counts = clean.counts
        counts["rows_in"] += repeats + corrections
        counts["duplicate_rows"] += repeats
        self._add_symbols([s for s in clean.symbols if s not in self._sid])
        rows = clean.rows
        sid = np.array([self._sid[s] for s in clean.symbols], dtype=np.int64)[rows.get_column("sid").to_numpy()]
        tid = rows.get_column("tid").to_numpy().astype(np.int64)
        values = {name: rows.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy() for name in GRID_COLUMNS}
        seen = self.filled[tid, sid]
        same = seen & self._same(tid, sid, values)
        counts["duplicate_rows"] += int(same.sum())
        counts["corrections"] = corrections + int((seen & ~same).sum())
        keep = ~same
        tid, sid = tid[keep], sid[keep]
        for name, value in values.items():
            self.columns[name][tid, sid] = value[keep]
        self.filled[tid, sid] = True
        if len(tid):
            self.state.invalidate(int(tid.min()))  # a late row changes the day statistics from its minute on
        return Added(counts, tid, sid, clean.by_minute)

    def _same(self, tid: np.ndarray, sid: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
        """Whether each clean row equals its cell's values (NaN equals NaN)."""
        same = np.ones(len(tid), dtype=np.bool_)
        for name, new in values.items():
            old = self.columns[name][tid, sid]
            same &= (old == new) | (np.isnan(old) & np.isnan(new))
        return same

    def _add_symbols(self, new: list[str]) -> None:
        """Empty grid columns for symbols first seen now."""
        if not new:
            return
        for name in new:
            self._sid[name] = len(self.symbols)
            self.symbols.append(name)
        empty = _empty_columns(self.session.n_minutes, len(new))
        for name, column in self.columns.items():
            self.columns[name] = np.concatenate([column, empty[name]], axis=1)
        self.filled = np.concatenate(
            [self.filled, np.zeros((self.session.n_minutes, len(new)), dtype=np.bool_)], axis=1
        )

    def so_far(self, minute: int) -> dict[str, np.ndarray]:
        """The columns of minutes 0..``minute`` (the input of a real-time ``compute_grid``)."""
        return {name: column[: minute + 1] for name, column in self.columns.items()}


class Added(NamedTuple):
    """What ``DayGrid.add`` did: the cleaning counts of the rows (and ``corrections``), the cells it changed."""

    counts: dict[str, int]
    tid: np.ndarray  # minute of each changed cell
    sid: np.ndarray  # symbol of each changed cell (its grid column)
    by_minute: pl.DataFrame | None  # the counts of each minute with rows (``CleanRows.by_minute``)


_NO_CELLS = np.empty(0, dtype=np.int64)


def _last_versions(frame: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
    """``frame`` with one row per (symbol, minute): exact repeats dropped, of rows that differ the last kept.

    Returns the rows, how many were exact repeats, how many were replaced by a later
    version (corrections). Rows without a symbol or ts are left for the cleaning to count.
    """
    minute = pl.col("ts").dt.truncate("1m").alias("_minute")
    if frame.select(pl.struct("symbol", minute).is_unique().all()).item():
        return frame, 0, 0  # the usual call: one row per key (a null key is unique too, or counted later)
    keyed = pl.col("symbol").is_not_null() & pl.col("ts").is_not_null()
    rows, loose = frame.filter(keyed), frame.filter(~keyed)
    last = rows.with_columns(minute).unique(subset=["symbol", "_minute"], keep="last", maintain_order=True)
    versions = rows.unique().height  # distinct rows: the versions of each (symbol, minute)
    repeats, corrections = rows.height - versions, versions - last.height
    if not repeats and not corrections:
        return frame, 0, 0
    return pl.concat([last.drop("_minute"), loose]), repeats, corrections

"""The day's clean rows on the dense (minutes, symbols) grid, whole or minute by minute.

``DayGrid`` is the one grid of batch and real time: ``from_raw`` cleans a whole day's
rows at once (``build_day``); ``add`` takes the rows that arrived since, cleans them by
the same rules and checks them against the cells already filled (a repeat is dropped,
a contradiction is a ``DataError``), which is what ``RealtimePredictor`` calls each
minute. Both end in ``compute_grid`` on the same arrays, so both give the same bits.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from tthf.engine.data.calendar import DEFAULT_CALENDAR, session_minutes
from tthf.engine.features.clean import QUOTE, TRADE_PRICES, CleanRows, Session, clean_rows
from tthf.engine.features.state import DayState
from tthf.errors import DataError

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
        self.latest = -1  # the latest minute with a row
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
        grid.latest = clean.n_minutes - 1
        return grid

    def add(self, frame: pl.DataFrame, source: str) -> None:
        """Clean ``frame`` (rows of this day's session) as batch does and put its rows into the grid.

        A row that repeats a filled cell exactly is dropped; one that contradicts it raises
        ``DataError`` and leaves the grid unchanged.
        """
        names = sorted(frame.get_column("symbol").drop_nulls().unique().to_list())
        if not names:
            return
        clean = clean_rows(frame, self.day, names, source, calendar=self.calendar)
        if clean.rows.height == 0:
            return
        rows = clean.rows
        local = np.array([self._sid.get(s, -1) for s in clean.symbols], dtype=np.int64)
        new = [s for s in clean.symbols if s not in self._sid]
        sid = local[rows.get_column("sid").to_numpy()]
        tid = rows.get_column("tid").to_numpy().astype(np.int64)
        values = {name: rows.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy() for name in GRID_COLUMNS}
        old = sid >= 0
        seen = np.zeros(len(sid), dtype=np.bool_)
        seen[old] = self.filled[tid[old], sid[old]]
        if seen.any():
            self._check_repeats(tid[seen], sid[seen], {n: v[seen] for n, v in values.items()}, source)
        self._add_symbols(new)
        sid = np.array([self._sid[s] for s in clean.symbols], dtype=np.int64)[rows.get_column("sid").to_numpy()]
        keep = ~seen
        tid, sid = tid[keep], sid[keep]
        for name, value in values.items():
            self.columns[name][tid, sid] = value[keep]
        self.filled[tid, sid] = True
        self.rows_in += frame.height
        if len(tid):
            self.latest = max(self.latest, int(tid.max()))
            self.state.invalidate(int(tid.min()))  # a late row changes the day statistics from its minute on

    def _check_repeats(self, tid: np.ndarray, sid: np.ndarray, values: dict[str, np.ndarray], source: str) -> None:
        """Rows for cells already filled must repeat them exactly (NaN equals NaN)."""
        differ = np.zeros(len(tid), dtype=np.bool_)
        for name, new in values.items():
            old = self.columns[name][tid, sid]
            differ |= ~((old == new) | (np.isnan(old) & np.isnan(new)))
        if differ.any():
            i = int(np.argmax(differ))
            when = self.minutes[tid[i]].astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc)
            raise DataError(
                f"{source}: {int(differ.sum())} row(s) repeat an earlier (symbol, ts) with "
                f"different values, e.g. symbol={self.symbols[sid[i]]!r} ts={when.isoformat()}; "
                "send one row per symbol and minute"
            )

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

    def so_far(self) -> dict[str, np.ndarray]:
        """The columns up to the latest minute with a row (the input of a real-time ``compute_grid``)."""
        return {name: column[: self.latest + 1] for name, column in self.columns.items()}

"""File columns on the session grid: the user's feature rows in their (symbol, minute) cells, filled.

The grid is tthf's: every regular-session minute of the day for every symbol, so windows
count session minutes whatever the source (design.md: a window ending at ``t`` holds
``t-seq_len+1 .. t``). A symbol's day starts at its first row; after it, a minute with no
row is a missing value, like a null in a row;
``fill`` then fills per symbol along the day, before scaling: ``ffill_then_zero`` carries
the last value forward and puts 0 where nothing came before, ``zero`` puts 0, ``none``
leaves it missing and masks the minute (no window holds it). Rows outside the session are
dropped and counted, as for raw bars.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from tthf.engine.config import DEFAULT_CALENDAR, FILLS
from tthf.engine.data.calendar import session_minutes
from tthf.engine.features.clean import MINUTE_US, Session
from tthf.engine.features.scalers import Scalers


@dataclass
class FileGrid:
    """``values``: (S, M, F) float64, NaN where missing (before the fill); ``present``: (S, M) a row was there."""

    symbols: list[str]
    minutes: np.ndarray
    values: np.ndarray
    present: np.ndarray
    counts: dict[str, int]


def file_grid(
    rows: pl.DataFrame,
    day: dt.date,
    names: Sequence[str],
    *,
    symbols: Sequence[str] | None = None,
    calendar: str = DEFAULT_CALENDAR,
) -> FileGrid:
    """``names`` of ``rows`` (``read_feature_day``'s frame) in their session cells; nothing is filled yet.

    ``symbols`` fixes the grid's symbols and order (another source's: their rows only, the
    others dropped and counted); by default every symbol with a row in the session, sorted.
    """
    session = Session.of(day, calendar)
    n = session.n_minutes
    offset = ((pl.col("ts").dt.epoch("us") - session.start_us) // 60_000_000).alias("_tid")
    rows = rows.with_columns(offset)
    inside = rows.filter((pl.col("_tid") >= 0) & (pl.col("_tid") < n))
    names_s = sorted(inside["symbol"].unique().to_list()) if symbols is None else list(symbols)
    sid_of = {s: i for i, s in enumerate(names_s)}
    listed = inside.filter(pl.col("symbol").is_in(names_s))
    sid = np.array([sid_of[s] for s in listed["symbol"].to_list()], dtype=np.int64)
    tid = listed["_tid"].to_numpy().astype(np.int64)
    values = np.full((len(names_s), n, len(names)), np.nan)
    values[sid, tid] = listed.select(pl.col(list(names)).fill_null(np.nan)).to_numpy() if names else 0.0
    present = np.zeros((len(names_s), n), dtype=np.bool_)
    present[sid, tid] = True
    counts = {
        "file_outside_session": rows.height - inside.height,
        "file_unlisted_symbol": inside.height - listed.height,
        "file_rows_used": listed.height,
        "file_missing_minutes": int(present.size - present.sum()),
        "file_null_values": int(np.isnan(values[present]).sum()),
    }
    return FileGrid(names_s, session_minutes(day, calendar), values, present, counts)


def fill(values: np.ndarray, rule: str, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``values`` filled by ``rule`` per symbol along the day, as float32; the (S, M) mask of usable minutes).

    A symbol's day starts at its first row (``present``): the minutes before it are masked,
    as nothing was known of the symbol yet (real time cannot predict a symbol before its
    first row, so batch does not either). From there ``ffill_then_zero`` and ``zero`` leave
    nothing missing; ``none`` masks each minute with a missing value (its NaNs stay, and no
    window holds them).
    """
    out, mask, _ = fill_minutes(values, rule, present, None)
    return out, mask


@dataclass
class Carry:
    """What filling the minutes after ``t`` needs of minutes ``..t``: per symbol and column the last value
    (NaN: none yet; ``ffill_then_zero`` carries it), and whether the symbol's day has started."""

    last: np.ndarray  # (S, F) float64
    started: np.ndarray  # (S,) bool

    def grown(self, n_symbols: int) -> Carry:
        """The same for ``n_symbols`` symbols: the ones added since have no value and have not started."""
        extra = n_symbols - len(self.started)
        if extra <= 0:
            return self
        last = np.concatenate([self.last, np.full((extra, self.last.shape[1]), np.nan)])
        return Carry(last, np.concatenate([self.started, np.zeros(extra, dtype=np.bool_)]))


def fill_minutes(
    values: np.ndarray, rule: str, present: np.ndarray, carry: Carry | None
) -> tuple[np.ndarray, np.ndarray, Carry]:
    """``fill`` of a run of minutes that follows ``carry`` (None: the day's first minutes), and the carry after it.

    Filling minutes ``a..b`` from the carry of ``a-1`` gives the bits of filling ``0..b`` at
    once: a forward fill copies values, and the rest is per cell (real time fills each
    minute once, ``FileDayGrid``).
    """
    if rule not in FILLS:
        raise ValueError(f"fill {rule!r}; use one of {FILLS}")
    out = values.copy()
    if carry is not None:  # the minute before as column 0, dropped at the end
        out = np.concatenate([carry.last[:, None, :], out], axis=1)
        present = np.concatenate([carry.started[:, None], present], axis=1)
    started = np.logical_or.accumulate(present, axis=1) if present.size else present.copy()
    if rule == "ffill_then_zero" and out.size:
        m = out.shape[1]
        last = np.where(np.isnan(out), 0, np.arange(m)[None, :, None])
        np.maximum.accumulate(last, axis=1, out=last)
        out = np.take_along_axis(out, last, axis=1)
    if out.shape[1]:
        after = Carry(out[:, -1].copy(), started[:, -1].copy())
    else:  # no minutes and no carry: nothing seen yet
        after = Carry(np.full((out.shape[0], out.shape[2]), np.nan), np.zeros(out.shape[0], dtype=np.bool_))
    if carry is not None:
        out, started = out[:, 1:], started[:, 1:]
    missing = np.isnan(out)
    if rule == "none":
        return out.astype(np.float32), started & ~missing.any(axis=2), after
    out[missing] = 0.0
    return out.astype(np.float32), started, after


def scaled_files(grid: FileGrid, rule: str, scalers: Scalers, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the grid's columns filled by ``rule`` and scaled, (S, M, F) float32; the mask): what batch and real time feed.

    Scaling is ``Scalers.transform``'s float32 operations; under ``none`` the masked minutes'
    NaNs become 0 (no window holds them).
    """
    values, mask = fill(grid.values, rule, grid.present)
    scaled = scalers.subset(names).transform(values, names, names)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    return scaled, mask


def in_model_order(feature_names: Sequence[str], *parts: tuple[Sequence[str], np.ndarray]) -> np.ndarray:
    """(S, M, F) float32: each part's columns (``(names, (S, M, k) array)``) at their place in the run's order."""
    first = parts[0][1]
    out = np.empty((*first.shape[:2], len(feature_names)), dtype=np.float32)
    at = {n: i for i, n in enumerate(feature_names)}
    for names, values in parts:
        out[..., [at[n] for n in names]] = values
    return out


class FileDayGrid:
    """A day's feature rows as they arrive (real time): their session cells, filled and scaled minute by minute.

    ``add`` puts rows into their cells (a later row for a (symbol, minute) replaces the
    earlier; an exact repeat changes nothing); ``inputs(top)`` fills and scales only the
    minutes not done yet, from the carry of the minute before (``fill_minutes``), so a
    minute costs one minute whatever the time of day. A row for a minute already done
    (a late row) makes the fill start again from the day's first minute at the next call.
    The cells' bits are those of ``scaled_files(file_grid(<the same rows>))``, batch's.
    Symbols keep their order of arrival.
    """

    def __init__(self, session: Session, names: Sequence[str], rule: str, scalers: Scalers) -> None:
        if rule not in FILLS:
            raise ValueError(f"fill {rule!r}; use one of {FILLS}")
        self.session = session
        self.names, self.rule = list(names), rule
        self._scalers = scalers.subset(self.names)
        self.symbols: list[str] = []
        self.sid: dict[str, int] = {}
        n, f = session.n_minutes, len(self.names)
        self.values = np.full((0, n, f), np.nan)  # (S, M, F) the rows' values, NaN where missing
        self.present = np.zeros((0, n), dtype=np.bool_)  # a row is there
        self.scaled = np.zeros((0, n, f), dtype=np.float32)  # filled and scaled, minutes 0..done
        self.mask = np.zeros((0, n), dtype=np.bool_)  # usable, minutes 0..done
        self.done = -1  # the last minute filled and scaled
        self._carry: Carry | None = None  # the fill's carry after minute ``done``

    def add(self, rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Put keyed rows (``conform_features``'s frame) into their cells: the (minute, symbol) cells changed and the
        counts ``rows_used``, ``duplicate_rows``, ``corrections`` and ``off_session`` (rows outside the session)."""
        tid_all = (rows.get_column("ts").dt.epoch("us").to_numpy() - self.session.start_us) // MINUTE_US
        inside = (tid_all >= 0) & (tid_all < self.session.n_minutes)
        rows = rows.filter(pl.Series(inside)).with_columns(pl.Series("_tid", tid_all[inside]))
        last = rows.unique(subset=["symbol", "_tid"], keep="last", maintain_order=True)
        self._add_symbols([s for s in dict.fromkeys(last.get_column("symbol").to_list()) if s not in self.sid])
        sid = np.array([self.sid[s] for s in last.get_column("symbol").to_list()], dtype=np.int64)
        tid = last.get_column("_tid").to_numpy().astype(np.int64)
        values = last.select(pl.col(self.names).fill_null(np.nan)).to_numpy().reshape(len(tid), len(self.names))
        old = self.values[sid, tid]
        seen = self.present[sid, tid]
        same = seen & ((old == values) | (np.isnan(old) & np.isnan(values))).all(axis=1)
        keep = ~same
        tid, sid = tid[keep], sid[keep]
        self.values[sid, tid] = values[keep]
        self.present[sid, tid] = True
        if len(tid) and int(tid.min()) <= self.done:
            self.done, self._carry = -1, None  # a late row: fill the day again at the next call
        counts = {
            "rows_used": len(tid),
            "duplicate_rows": rows.height - last.height + int(same.sum()),
            "corrections": int((seen & ~same).sum()),
            "off_session": int((~inside).sum()),
        }
        return tid, sid, counts

    def inputs(self, top: int) -> tuple[np.ndarray, np.ndarray]:
        """(the filled, scaled columns of minutes ``0..top``, (S, top+1, F) float32; their mask): filling the
        minutes after the last call's only."""
        if top > self.done:
            first = self.done + 1
            carry = self._carry.grown(len(self.symbols)) if self._carry is not None else None
            part = slice(first, top + 1)
            values, mask, self._carry = fill_minutes(self.values[:, part], self.rule, self.present[:, part], carry)
            scaled = self._scalers.transform(values, self.names, self.names)
            np.nan_to_num(scaled, copy=False, nan=0.0)
            self.scaled[:, part], self.mask[:, part] = scaled, mask
            self.done = top
        return self.scaled[:, : top + 1], self.mask[:, : top + 1]

    def _add_symbols(self, new: list[str]) -> None:
        """Empty cells for symbols first seen now (their minutes done so far are masked: nothing came yet)."""
        if not new:
            return
        for name in new:
            self.sid[name] = len(self.symbols)
            self.symbols.append(name)
        k, (n, f) = len(new), (self.session.n_minutes, len(self.names))
        self.values = np.concatenate([self.values, np.full((k, n, f), np.nan)])
        self.present = np.concatenate([self.present, np.zeros((k, n), dtype=np.bool_)])
        self.scaled = np.concatenate([self.scaled, np.zeros((k, n, f), dtype=np.float32)])
        self.mask = np.concatenate([self.mask, np.zeros((k, n), dtype=np.bool_)])

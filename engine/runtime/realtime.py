"""The batch engine as a library object for live systems: rows in as they come, every closed minute predicted.

    predictor = RealtimePredictor.from_run("runs", "jennifer", backend="auto", journal="journal/")
    resend_from = predictor.reset(dt.date(2024, 3, 5))   # replays the day's journal; None: nothing held
    result = predictor.update(bars, close=minute)         # bars: polars DataFrame or Arrow table, raw schema
    result.predictions   # ts, symbol, ret_1h, vol_10m, ret_conf, vol_conf, source_ts: the minutes closed now
    result.revisions     # earlier minutes re-predicted because late or corrected rows changed their windows

The rules (docs/running.md, "Real time"):

- **The clock.** "Now" is the last minute the caller said is complete: ``close(minute)`` or
  ``update(rows, close=minute)``, or, with ``clock=`` (a function returning the wall time),
  every minute whose end is ``grace`` behind it. No row moves it. Rows stamped after the
  open minute (the one after the last closed; with a wall clock, the current one) are
  rejected and counted (``future``); so are rows of another day (``other_day``), rows
  without a symbol or ts (``null_key``) and rows outside the session (``off_session``).
- **Every closed minute is predicted**, all those a call closes in one batch.
- **Rows, not minutes.** Bad values are cleaned as in batch and counted; an exact repeat is
  dropped; a row with other values for a (symbol, minute) seen before is a correction and
  the later one wins. Nothing a row holds rejects the other rows of its call.
- **Late data.** A row (new or corrected) for a minute already closed is applied; every
  closed minute of its symbol from that minute on (up to ``revise`` minutes back; ``None``
  the whole day, 0 none) is predicted again and returned in ``revisions``; a revision row
  whose outputs are null withdraws a published row (its window is no longer valid).
  ``apply_update`` keeps a day's outputs current; at the close they equal the batch file of
  the day's final data (each row's last version).
- **After the close** (the session's last minute closed) nothing is predicted or repeated.
- **The journal.** With ``journal=`` (a folder), every accepted call is appended to the
  day's Arrow IPC file and fsync'd before ``update`` returns (engine/runtime/journal.py);
  ``reset`` replays it in one catch-up and returns the last minute it holds closed. That
  minute is reopened: resend from it and its predictions come again. What each journaled
  call published goes to a file beside it (engine/runtime/outputlog.py): ``reset`` restores
  the day's outputs so far (``replayed``) from it instead of predicting every held minute
  again, and predicts them again when the file is missing, torn or damaged.

An imported run whose inputs all come from the user's feature files takes rows in the files'
schema instead (``symbol``, ``ts`` and its feature columns, as ``[features.columns]`` names
them): they land in a ``features.files.FileDayGrid``, which fills and scales each closed
minute once with batch's fill and scaling; late and corrected feature rows revise as raw rows
do, and the journal holds the rows as ``conform_features`` gives them. A run that computes some
features takes raw bars as ``rows`` and its feature rows as ``features=`` (no journal: two feeds).

Exactness: the predictor keeps the day's clean grid in a ``features.DayGrid`` and calls
``features.compute_grid`` -- the function batch calls -- from ``seq_len`` minutes before
the first minute to predict; the day statistics live in a ``features.DayState`` that
resumes from the last minute computed (from a late row's minute when one arrives).
Windowed features are computed in a way whose bits do not depend on where the arrays
start, so the output for minute ``t`` is the batch output for minute ``t``
(tests/runtime/test_realtime.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from tthf.engine import predictions, windows
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data import marketdata
from tthf.engine.data.calendar import is_trading_day, timezone
from tthf.engine.data.featurefiles import conform_features
from tthf.engine.features import FEATURE_NAMES, DayGrid, compute_grid
from tthf.engine.features.clean import MINUTE_US
from tthf.engine.features.files import FileDayGrid, in_model_order
from tthf.engine.runs import Run, find_run
from tthf.engine.runtime.backends import Backend, open_backend
from tthf.engine.runtime.backends.base import FixedBatch
from tthf.engine.runtime.backends.tensorrt import Rebuild
from tthf.engine.runtime.journal import DayJournal, journal_path, read_journal
from tthf.engine.runtime.outputlog import OutputLog, outputs_path, read_outputs
from tthf.engine.store import Store
from tthf.errors import DataError, UsageError

log = logging.getLogger("tthf.realtime")

#: why rows were rejected, the keys of ``Update.rejected``
REJECT_REASONS = ("null_key", "off_session", "other_day", "future", "day_closed")
#: windows per backend call when a call predicts many minutes (a catch-up, a long revision)
CHUNK = 4096


@dataclass(frozen=True)
class Update:
    """What one ``update`` (or ``close``) did.

    ``predictions``: the rows of the minutes this call closed, sorted by (ts, symbol).
    ``revisions``: rows of minutes closed earlier, predicted again because late or corrected
    rows changed their windows (``ts`` is the minute revised); null outputs withdraw a row.
    ``counts``: the cleaning counts of this call's rows (features.clean.COUNT_KEYS, and
    ``corrections``); ``minute_counts``: per minute of its rows (``ts``), the rows used and the
    counts of the value rules; ``rejected``: rows rejected, by reason (``REJECT_REASONS``);
    ``late_rows``: rows applied to minutes already closed; ``seconds``: where the time went.
    """

    predictions: pl.DataFrame
    revisions: pl.DataFrame
    closed: dt.datetime | None  # the last minute closed after this call
    day_closed: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    late_rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    minute_counts: pl.DataFrame | None = None


def apply_update(published: pl.DataFrame, update: Update) -> pl.DataFrame:
    """The day's outputs after ``update``, keyed by (ts, symbol): its predictions and revisions replace
    the rows of the same minute and symbol (a minute resent after a restart is published again), and a
    revision with null outputs withdraws its row."""
    fresh = pl.concat([update.predictions, update.revisions])
    if fresh.height:
        published = published.join(fresh.select("ts", "symbol"), on=["ts", "symbol"], how="anti")
    return pl.concat([published, fresh.filter(pl.col(OUTPUT_NAMES[0]).is_not_null())]).sort("ts", "symbol")


class RealtimePredictor:
    """Predictions minute by minute, computed exactly as ``tthf-run --dense`` computes them."""

    def __init__(
        self,
        run: Run,
        backend: Backend,
        *,
        revise: int | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        grace: dt.timedelta = dt.timedelta(seconds=2),
        journal: str | os.PathLike[str] | None = None,
    ) -> None:
        cfg = run.config
        self.run = run
        self.backend = backend
        self.seq_len = cfg.model.seq_len
        self.feature_names = list(cfg.feature_names)
        self.scalers = run.load_scalers()
        #: an imported run with feature files takes feature rows: as ``rows`` when every input comes from
        #: them (``_update_files``), as ``features=`` beside the raw bars when it computes some too
        self.files = cfg.feature_files
        self.computed = cfg.computed_names
        if self.files is not None and self.computed and journal is not None:
            raise UsageError(
                f"run {run.ref.name} reads feature files beside raw bars: real time keeps no journal of such a "
                "run's two feeds; leave journal unset (resend the day's rows after a restart)"
            )
        #: the kernel writes the run's scaled inputs (of the computed names) directly (Scalers.transform's bits)
        computing = self.scalers if self.files is None else self.scalers.subset(self.computed)
        self._scale = (
            computing.kernel_scale(FEATURE_NAMES, self.computed, what="the run's features") if self.computed else None
        )
        self.fgrid: FileDayGrid | None = None  # a feature-file run's rows of the day so far, in their cells
        self._tz = timezone(cfg.calendar)  # the exchange's local time: what "a trading day" means
        #: a minute's features are latency-bound: every core this process may use (same bits as one)
        self._threads = len(os.sched_getaffinity(0))
        if revise is not None and revise < 0:
            raise UsageError(f"revise={revise}: give the minutes to look back (0: no revisions; None: the whole day)")
        self.revise = revise
        self.clock = clock
        self.grace = grace
        self.journal_dir = Path(journal) if journal is not None else None
        self.grid: DayGrid | None = None
        self.closed = -1  # the last minute closed (index into the session)
        self.seconds: dict[str, float] = {}  # where the last update's time went
        self._journal: DayJournal | None = None
        self._outputs: OutputLog | None = None  # what the journaled calls published (outputlog.py)
        self._replayed = predictions.empty()  # the day's outputs up to the minute the journal holds
        self._day_us = (0, 0)  # the day's local midnights, µs since the epoch
        self._buffer = np.empty((0, self.seq_len, len(self.feature_names)), dtype=np.float32)
        self._fixed: FixedBatch | None = None  # the backend's all-symbols batch, where it has one (TensorRT)

    @classmethod
    def from_run(
        cls,
        store: Store | str,
        run: str,
        *,
        backend: str = "auto",
        experiment: str | None = None,
        model_type: str | None = None,
        rebuild: Rebuild | None = None,
        revise: int | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        grace: dt.timedelta = dt.timedelta(seconds=2),
        journal: str | os.PathLike[str] | None = None,
    ) -> RealtimePredictor:
        """Open run ``run`` (an id or a unique prefix) and its best backend here (``auto``) or the one named."""
        opened = Run.open(find_run(store, run, experiment=experiment, model_type=model_type))
        backend_ = open_backend(opened, backend, rebuild=rebuild)
        return cls(opened, backend_, revise=revise, clock=clock, grace=grace, journal=journal)

    @property
    def day(self) -> dt.date | None:
        return self.grid.day if self.grid is not None else None

    @property
    def day_closed(self) -> bool:
        return self.grid is not None and self.closed == self.grid.session.n_minutes - 1

    def reset(self, day: dt.date) -> dt.datetime | None:
        """Start ``day`` (windows never cross a day); with a journal, replay what it holds of ``day``.

        Returns the last minute the replay holds closed (None: none): the journal up to the
        call that closed its last minute (``journal.Replay``). Resend every call made after
        the one that closed the minute returned; they are processed as the first time. The
        replayed minutes' rows are ``replayed()``.
        """
        calendar = self.run.config.calendar
        if not is_trading_day(day, calendar):
            raise DataError(
                f"{day} is not a trading day on {calendar} (weekend or holiday); there is nothing to predict"
            )
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._outputs is not None:
            self._outputs.close()
            self._outputs = None
        self._replayed = predictions.empty()
        self.grid = DayGrid(day, calendar)
        if self.files is not None:
            self.fgrid = FileDayGrid(self.grid.session, self.files.columns, self.files.fill, self.scalers)
            if not self.computed:
                self.grid.symbols = self.fgrid.symbols  # the day's symbols: those with feature rows (one list)
        self.closed = -1
        midnight = dt.datetime.combine(day, dt.time(), self._tz)  # the local day, in µs since the epoch
        self._day_us = (int(midnight.timestamp() * 1e6), int((midnight + dt.timedelta(days=1)).timestamp() * 1e6))
        if self.journal_dir is None:
            return None
        schema = self._schema()
        path = journal_path(self.journal_dir, day)
        held = read_journal(path, schema)
        self._journal = DayJournal(path, schema)
        self._journal.open(held)
        if held.rows.num_rows:
            self._add(_frame(held.rows), None)
        if held.close_us is not None:
            self.closed = self._minute_index(held.close_us)
            self._warm()
        self._restore(outputs_path(self.journal_dir, day), self._journal.written)
        return None if held.close_us is None else self._instant(self.closed)

    def _restore(self, path: Path, tag: tuple[int, int | None]) -> None:
        """The day's outputs up to the minute the journal holds: from the outputs file when it vouches for
        them, else predicted again (every closed minute); then the file starts afresh with them."""
        restored = read_outputs(path, tag) if self.closed >= 0 else predictions.empty()
        if restored is None:
            log.info("%s: no outputs to restore for the journal's %d rows; predicting its minutes again", path, tag[0])
            restored = self._predict(0, self.closed, {})[0]
        self._replayed = restored
        self._outputs = OutputLog(path)
        self._outputs.open(restored, tag)

    def replayed(self) -> pl.DataFrame:
        """After ``reset`` replayed a journal: the day's outputs of every minute it holds closed, each
        (ts, symbol)'s last version. A restarted feed publishes them again as revisions
        (``apply_update``), so that a reply the process computed but never delivered before it died
        is not lost; those minutes are not resent. They come from the outputs file beside the journal
        (outputlog.py) -- what the journaled calls published, with ``revise=None`` the bits of predicting
        every held minute again -- or, when it cannot vouch for them, from predicting them again."""
        return self._replayed

    def close(self, minute: dt.datetime) -> Update:
        """Say that every minute up to ``minute`` is complete: predict those not predicted yet."""
        return self.update(None, close=minute)

    def update(
        self,
        rows: pl.DataFrame | pa.Table | None,
        *,
        close: dt.datetime | None = None,
        features: pl.DataFrame | pa.Table | None = None,
    ) -> Update:
        """Apply ``rows`` (raw schema; any minutes of the day) and predict the minutes closed by ``close``.

        Without ``close``, minutes close by the wall ``clock`` when there is one, else none. A run
        whose inputs all come from feature files takes ``rows`` in the files' schema; one that
        also computes features takes the raw bars as ``rows`` and its feature rows as ``features``.
        """
        result = self._apply(rows, close, features)
        if self._outputs is not None and self._journal is not None and self._journal.written != self._outputs.tag:
            # beside the call's journal batch, what it published: a restart restores it (outputlog.py)
            self._outputs.append(pl.concat([result.predictions, result.revisions]), self._journal.written)
        return result

    def _apply(
        self, rows: pl.DataFrame | pa.Table | None, close: dt.datetime | None, features: pl.DataFrame | pa.Table | None
    ) -> Update:
        """``update`` up to its outputs file: the rows applied, journaled, and the minutes they close predicted."""
        t0 = time.perf_counter()
        if features is not None and not (self.files is not None and self.computed):
            raise UsageError(
                f"run {self.run.ref.name} takes no features= rows: give them as rows when every input comes "
                "from feature files; a run without feature files takes raw bars only"
            )
        if self.files is not None and not self.computed:
            frame = self._feature_rows(rows)
            table = frame.to_arrow().cast(self._schema())
        else:
            table = marketdata.conform(_arrow(rows), "realtime bars")
            frame = _frame(table)
        if self.grid is None:
            first = close if close is not None else frame.get_column("ts").min()
            if first is None:
                return self._result(predictions.empty(), predictions.empty(), {}, {}, 0, {})
            self.reset(first.astimezone(self._tz).date())  # type: ignore[union-attr]
        grid = self.grid
        assert grid is not None
        if self.day_closed:
            return self._result(predictions.empty(), predictions.empty(), {}, {"day_closed": frame.height}, 0, {})
        before = self.closed
        now = self.clock() if self.clock is not None else None  # read once: one wall time per call
        closed = max(before, self._close_index(close, now))
        keep, rejected = self._screen(frame, self._open_minute(closed, now))
        accepted = frame.filter(keep)
        extra = None
        if features is not None:  # a mixed run's feature rows: screened by the same clock
            feature_rows = self._feature_rows(features)
            fkeep, _ = self._screen(feature_rows, self._open_minute(closed, now))
            extra = feature_rows.filter(fkeep)
        tid, sid, counts, by_minute = self._add(accepted, extra)
        rejected |= {"null_key": counts.get("null_key", 0), "off_session": counts.get("extended_hours", 0)}
        if self._journal is not None and (accepted.height or closed > before):
            self._journal.append(table.filter(keep.to_arrow()), self._close_us(closed))
        late = tid <= before
        t1 = time.perf_counter()
        revise = self._revisions(tid[late], sid[late], before)
        new, revised, t2 = self._predict(before + 1, closed, revise)
        self.closed = closed
        t3 = time.perf_counter()
        self.seconds = {"ingest": t1 - t0, "features": t2 - t1, "predict": t3 - t2, "total": t3 - t0}
        result = self._result(new, revised, counts, rejected, int(late.sum()), self.seconds)
        if by_minute is None:
            return result
        ts = pl.Series("ts", grid.minutes[by_minute.get_column("tid").to_numpy()]).dt.replace_time_zone("UTC")
        return dataclasses.replace(result, minute_counts=by_minute.drop("tid").insert_column(0, ts))

    def _feature_rows(self, rows: pl.DataFrame | pa.Table | None) -> pl.DataFrame:
        """Rows in the feature files' schema as every reader of feature rows returns them (``conform_features``)."""
        files = self.files
        assert files is not None
        if rows is None:
            keys: dict[str, pl.DataType] = {"symbol": pl.String(), "ts": pl.Datetime("us", "UTC")}
            return pl.DataFrame(schema={**keys, **{name: pl.Float64() for name in files.columns}})
        return conform_features(_arrow(rows), "realtime feature rows", files, files.columns)

    def _schema(self) -> pa.Schema:
        """The rows' schema in the journal: the raw one, or a feature-file run's rows as ``conform_features`` gives them."""
        if self.files is not None and not self.computed:
            return self._feature_rows(None).to_arrow().schema
        return marketdata.conform(marketdata.ARROW_SCHEMA.empty_table(), "journal").schema

    def _with_files(self, part: np.ndarray, mask: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """A mixed run's inputs: the kernel's computed columns ``part`` (minutes ``start..``) and the file columns
        of the same symbols and minutes, in the run's order; a minute is usable when both sources say so."""
        files, grid, fgrid = self.files, self.grid, self.fgrid
        assert files is not None and grid is not None and fgrid is not None
        top = mask.shape[1] - 1
        scaled, file_mask = fgrid.inputs(top)
        at = np.array([fgrid.sid.get(s, -1) for s in grid.symbols], dtype=np.int64)  # the raw grid's symbols
        have = at >= 0  # a symbol without feature rows yet has no usable minute (batch: none in its file grid)
        columns = np.zeros((len(at), top + 1 - start, len(files.columns)), dtype=np.float32)
        columns[have] = scaled[at[have], start:]
        usable = np.zeros(mask.shape, dtype=np.bool_)
        usable[have] = file_mask[at[have]]
        return in_model_order(self.feature_names, (self.computed, part), (files.columns, columns)), mask & usable

    def _result(
        self,
        new: pl.DataFrame,
        revised: pl.DataFrame,
        counts: dict[str, int],
        rejected: dict[str, int],
        late: int,
        seconds: dict[str, float],
    ) -> Update:
        closed = self._instant(self.closed) if self.grid is not None and self.closed >= 0 else None
        why = {reason: rejected.get(reason, 0) for reason in REJECT_REASONS}
        return Update(new, revised, closed, self.day_closed, counts, why, late, dict(seconds))

    # -- the clock ---------------------------------------------------------------------------

    def _close_index(self, close: dt.datetime | None, now: dt.datetime | None) -> int:
        """The last minute closed by ``close`` (or by the wall clock), clamped to the session."""
        grid = self.grid
        assert grid is not None
        if close is not None:
            if close.astimezone(self._tz).date() != grid.day:
                raise UsageError(
                    f"close={close.isoformat()} is not a minute of {grid.day}; call reset(day) at the start of each day"
                )
            minute = self._minute_index(int(close.timestamp() * 1_000_000))
        elif now is not None:
            ended = now - self.grace
            minute = self._minute_index(int(ended.timestamp() * 1_000_000)) - 1  # the minute whose end is past
        else:
            return self.closed
        return min(minute, grid.session.n_minutes - 1)

    def _open_minute(self, closed: int, now: dt.datetime | None) -> int:
        """The latest minute a row may be stamped with: the one after the last closed, or the wall clock's."""
        if now is None:
            return closed + 1
        return self._minute_index(int(now.timestamp() * 1_000_000))

    def _minute_index(self, us: int) -> int:
        assert self.grid is not None
        return (us - self.grid.session.start_us) // MINUTE_US

    def _close_us(self, minute: int) -> int | None:
        return None if minute < 0 else self.grid.session.start_us + minute * MINUTE_US  # type: ignore[union-attr]

    def _instant(self, minute: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._close_us(minute) / 1e6, dt.timezone.utc)  # type: ignore[operator]

    def _screen(self, frame: pl.DataFrame, open_minute: int) -> tuple[pl.Series, dict[str, int]]:
        """Which rows are of this day up to the open minute; the others counted by reason (``other_day``, ``future``)."""
        grid = self.grid
        assert grid is not None
        us = pl.col("ts").dt.epoch("us")
        other_day = (us < self._day_us[0]) | (us >= self._day_us[1])
        minute = (us - grid.session.start_us) // MINUTE_US
        future = ~other_day & (minute > open_minute) & (minute < grid.session.n_minutes)
        flags = frame.select(other_day.fill_null(False).alias("o"), future.fill_null(False).alias("f"))
        o, f = flags.get_column("o"), flags.get_column("f")
        return ~(o | f), {"other_day": int(o.sum()), "future": int(f.sum())}

    # -- rows ------------------------------------------------------------------------------------

    def _add(
        self, frame: pl.DataFrame, features: pl.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int], pl.DataFrame | None]:
        """Put ``frame`` (raw bars, or a feature-file run's rows) and a mixed run's ``features`` into the day's grids.

        Returns the (minute, symbol) cells they changed (the symbol's index in ``grid.symbols``),
        the counts of ``frame``'s rows, and the raw bars' counts by minute.
        """
        grid = self.grid
        assert grid is not None
        if self.files is not None and not self.computed:
            return (*self._add_files(frame), None)
        tid = sid = np.empty(0, dtype=np.int64)
        counts: dict[str, int] = {}
        by_minute = None
        if frame.height:
            added = grid.add(frame, f"realtime bars of {grid.day}")
            tid, sid, counts, by_minute = added.tid, added.sid, added.counts, added.by_minute
        if features is not None and features.height:  # late file cells revise the raw grid's symbols too
            ftid, fsid, _ = self._add_files(features)
            fgrid = self.fgrid
            assert fgrid is not None
            at = {s: i for i, s in enumerate(grid.symbols)}
            gsid = np.array([at.get(fgrid.symbols[i], -1) for i in fsid.tolist()], dtype=np.int64)
            tid, sid = np.concatenate([tid, ftid[gsid >= 0]]), np.concatenate([sid, gsid[gsid >= 0]])
        return tid, sid, counts, by_minute

    def _add_files(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Feature rows into the file grid: the cells they changed and their counts (named as the raw bars')."""
        fgrid = self.fgrid
        assert fgrid is not None
        keyed = frame.filter(pl.col("symbol").is_not_null() & pl.col("ts").is_not_null())
        tid, sid, added = fgrid.add(keyed)
        counts = {"rows_in": frame.height, "null_key": frame.height - keyed.height}
        counts |= {"extended_hours": added.pop("off_session")} | added
        return tid, sid, counts

    def _revisions(self, tid: np.ndarray, sid: np.ndarray, before: int) -> dict[int, int]:
        """Symbol -> the first minute to predict again, from the late cells, within the look-back."""
        if not len(tid) or self.revise == 0:
            return {}
        first = 0 if self.revise is None else before - self.revise + 1
        revise: dict[int, int] = {}
        for t, s in zip(tid.tolist(), sid.tolist(), strict=True):
            t = max(t, first, self.seq_len - 1)
            if t <= before:
                revise[s] = min(revise.get(s, t), t)
        return revise

    # -- predictions -------------------------------------------------------------------------------

    def _warm(self) -> None:
        """Bring the day statistics up to the last closed minute (after a replay): the next minute costs one minute."""
        grid = self.grid
        assert grid is not None
        if self.fgrid is not None:
            self.fgrid.inputs(self.closed)
        if self.closed >= 0 and self.computed:
            start = max(self.closed - self.seq_len + 1, 0)
            compute_grid(grid.so_far(self.closed), grid.session.n_minutes, start=start, state=grid.state,
                         labels=False, scale=self._scale, threads=self._threads)  # fmt: skip

    def _predict(self, first: int, last: int, revise: dict[int, int]) -> tuple[pl.DataFrame, pl.DataFrame, float]:
        """Minutes ``first..last`` for every symbol and the revised (symbol, minutes), in one batch."""
        grid = self.grid
        assert grid is not None
        lo = min([max(first, self.seq_len - 1) if last >= first else last + 1, *revise.values()])
        top = max(last, self.closed)
        if (lo > last and not revise) or top < self.seq_len - 1:
            return predictions.empty(), predictions.empty(), time.perf_counter()
        start = lo - self.seq_len + 1
        scaled, mask = self._inputs(start, top)
        t_features = time.perf_counter()
        ok = self._window_ok(mask)
        new_s, new_t = _cells(ok, max(first, self.seq_len - 1), last)
        spans = [np.arange(t0, self.closed + 1, dtype=np.int32) for t0 in revise.values()]  # every minute from t0
        rev_s = np.repeat(np.fromiter(revise, dtype=np.int32, count=len(revise)), [len(t) for t in spans])
        rev_t = np.concatenate(spans) if spans else np.empty(0, dtype=np.int32)
        rev_ok = ok[rev_s, rev_t]
        sym = np.concatenate([new_s, rev_s[rev_ok]])
        ends = np.concatenate([new_t, rev_t[rev_ok]])
        out = self._run(scaled, sym, (ends - start).astype(np.int32))
        n_new = len(new_s)
        new = self._table(new_s, new_t, {k: v[:n_new] for k, v in out.items()})
        if not revise:
            return new, predictions.empty(), t_features
        revised = self._table(rev_s[rev_ok], rev_t[rev_ok], {k: v[n_new:] for k, v in out.items()})
        withdrawn = self._table(rev_s[~rev_ok], rev_t[~rev_ok], None)
        return new, pl.concat([revised, withdrawn]).sort("ts", "symbol"), t_features

    def _inputs(self, start: int, top: int) -> tuple[np.ndarray, np.ndarray]:
        """(the scaled inputs of minutes ``start..top`` in the run's order, (S, W, F); the mask of minutes ``0..top``)."""
        grid, files = self.grid, self.files
        assert grid is not None
        if files is not None and not self.computed:
            assert self.fgrid is not None
            scaled, mask = self.fgrid.inputs(top)
            return in_model_order(self.feature_names, (files.columns, scaled[:, start:])), mask
        scaled, mask, _ = compute_grid(grid.so_far(top), grid.session.n_minutes, start=start, state=grid.state,
                                       labels=False, scale=self._scale, threads=self._threads)  # fmt: skip
        return self._with_files(scaled, mask, start) if files is not None else (scaled, mask)

    def _window_ok(self, mask: np.ndarray) -> np.ndarray:
        """(S, W) bool: the ``seq_len`` minutes ending at each minute all have a usable quote."""
        bad = np.cumsum(~mask, axis=1, dtype=np.int32)
        ok = np.zeros(mask.shape, dtype=np.bool_)
        n = self.seq_len
        if mask.shape[1] >= n:
            ok[:, n - 1] = bad[:, n - 1] == 0
            ok[:, n:] = (bad[:, n:] - bad[:, :-n]) == 0
        return ok

    def _run(self, scaled: np.ndarray, sym: np.ndarray, ends: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs for the windows ending at (``sym``, ``ends``), in chunks."""
        outs: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
        fixed = self._fixed_batch(len(self.grid.symbols)) if len(sym) else None  # type: ignore[union-attr]
        chunk = fixed.capacity if fixed is not None else max(CHUNK, len(self.grid.symbols))  # type: ignore[union-attr]
        for at in range(0, len(sym), chunk):
            part = slice(at, at + chunk)
            if fixed is None and len(self._buffer) < len(sym[part]):
                self._buffer = np.empty((len(sym[part]), *self._buffer.shape[1:]), dtype=np.float32)
            target = self._buffer if fixed is None else fixed.inputs
            n = windows.gather_windows(scaled, sym[part].astype(np.int32), ends[part], target, seq_len=self.seq_len)
            got = self.backend.predict(self._buffer[:n]) if fixed is None else fixed.run(n)
            for name in OUTPUT_NAMES:
                outs[name].append(np.asarray(got[name])[:n].copy())
        return {k: np.concatenate(v) if v else np.empty(0, np.float32) for k, v in outs.items()}

    def _table(self, sym: np.ndarray, minute: np.ndarray, out: dict[str, np.ndarray] | None) -> pl.DataFrame:
        """Prediction rows of (symbol, minute) cells, sorted by (ts, symbol); ``out`` None: null outputs."""
        grid = self.grid
        assert grid is not None
        ts = grid.minutes[minute]
        symbols = pl.Series("symbol", grid.symbols, dtype=pl.String).gather(sym)
        values = out if out is not None else {name: np.full(len(sym), np.nan, np.float32) for name in OUTPUT_NAMES}
        table = predictions.table(ts, symbols, values, ts)
        if out is None:
            table = table.with_columns(pl.lit(None, pl.Float32).alias(name) for name in OUTPUT_NAMES)
        return table.sort("ts", "symbol")

    def _fixed_batch(self, n_symbols: int) -> FixedBatch | None:
        """The backend's fixed batch for all of today's symbols, remade only when they outgrow it.

        On TensorRT that is pinned buffers, one stream and a CUDA graph, allocated once, with
        one synchronization per minute (``TensorRTFixedBatch``); CPU backends have none and
        ``predict`` serves them.
        """
        if self._fixed is None or self._fixed.capacity < n_symbols:
            self._fixed = self.backend.fixed_batch(n_symbols)
        return self._fixed


def _cells(ok: np.ndarray, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """(symbol, minute) of the cells of minutes ``first..last`` where ``ok``, minute-major."""
    if last < first:
        empty = np.empty(0, dtype=np.int32)
        return empty, empty
    t, s = np.nonzero(ok[:, first : last + 1].T)
    return s.astype(np.int32), (t + first).astype(np.int32)


def _arrow(rows: pl.DataFrame | pa.Table | None) -> pa.Table:
    if rows is None:
        return marketdata.ARROW_SCHEMA.empty_table()
    return rows if isinstance(rows, pa.Table) else rows.to_arrow()


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame

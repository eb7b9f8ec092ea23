"""The batch engine as a library object for live systems: one minute of bars in, that minute's predictions out.

    predictor = RealtimePredictor.from_run("runs", "jennifer", backend="auto")
    predictor.reset(dt.date(2024, 3, 5))          # optional: the day is taken from the first bars
    rows = predictor.update(bars)                 # bars: polars DataFrame or Arrow table, raw schema
    # rows: ts, symbol, ret_1h, vol_10m, ret_conf, vol_conf, source_ts -- one per symbol whose
    # 30-minute window ending at the latest minute is valid, sorted by symbol

Exactness: the predictor keeps the day's clean grid so far (engine/features.py's cleaning,
one cell per symbol and minute) and calls ``features.compute_grid`` -- the function batch's
``build_day`` calls -- for the latest ``seq_len`` minutes only. The day statistics (forward
fills, cumulative volume and VWAP, EMAs) live in a ``features.DayState`` that resumes from
the previous minute (from a late row's minute when one arrives; from the open when a new
symbol appears); windowed features are computed in a way whose bits do not depend on where
the arrays start. Its output for minute ``t`` is therefore the batch output for minute ``t``
(tests/test_realtime.py). docs/running.md has the latency.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from tthf.engine import predictions, windows
from tthf.engine.data import marketdata
from tthf.engine.runtime.backends import Backend, open_backend
from tthf.engine.data.calendar import NEW_YORK, session_bounds, session_minutes
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.features import FEATURE_NAMES, GRID_COLUMNS, DayState, clean_rows, compute_grid
from tthf.engine.runs import Run, find_run
from tthf.engine.runtime.backends.tensorrt import Rebuild
from tthf.engine.store import Store
from tthf.errors import DataError, UsageError

log = logging.getLogger("tthf.realtime")


class RealtimePredictor:
    """Predictions minute by minute, computed exactly as ``tthf-run --dense`` computes them."""

    def __init__(self, run: Run, backend: Backend) -> None:
        cfg = run.config
        self.run = run
        self.backend = backend
        self.seq_len = cfg.model.seq_len
        self.feature_names = list(cfg.feature_names)
        self.scalers = run.load_scalers()
        self.day: dt.date | None = None
        self.seconds: dict[str, float] = {}  # where the last update's time went
        self._buffer = np.empty((0, self.seq_len, len(self.feature_names)), dtype=np.float32)

    @classmethod
    def from_run(cls, store: Store | str, run: str, *, backend: str = "auto", experiment: str | None = None,
                 model_type: str | None = None, rebuild: Rebuild | None = None) -> RealtimePredictor:
        """Open run ``run`` (an id or a unique prefix) and its best backend here (``auto``) or the one named."""
        opened = Run.open(find_run(store, run, experiment=experiment, model_type=model_type))
        return cls(opened, open_backend(opened, backend, rebuild=rebuild))

    def reset(self, day: dt.date) -> None:
        """Start ``day``: forget the previous day's grid (windows never cross a day)."""
        self.day = day
        start, end = session_bounds(day)
        self._start_us = int(start.timestamp()) * 1_000_000
        self._end_us = int(end.timestamp()) * 1_000_000
        self._minutes = session_minutes(day)
        self._symbols: list[str] = []
        self._sid: dict[str, int] = {}
        # the clean values so far, time-major (minutes, symbols) as compute_grid takes them; NaN = missing
        self._grid = {name: np.zeros((len(self._minutes), 0)) for name in GRID_COLUMNS}
        self._filled = np.zeros((len(self._minutes), 0), dtype=np.bool_)
        self._state = DayState()  # the day statistics so far, resumed minute by minute
        self._latest = -1  # the latest minute with a row today
        self._rows_in = 0

    @property
    def rows_kept(self) -> int:
        """Regular-session rows received today."""
        return self._rows_in if self.day is not None else 0

    def update(self, bars: pl.DataFrame | pa.Table) -> pl.DataFrame:
        """Add the newest bars (one minute, or several to catch up) and predict the latest minute.

        The latest minute is the latest regular-session ``ts`` seen today. Bars outside the
        regular session are ignored; a bar for another trading day is an error (call
        ``reset``). Bad values are cleaned as in batch; a row that contradicts an earlier row
        of the same (symbol, minute) raises ``DataError`` and leaves the predictor unchanged.
        """
        t0 = time.perf_counter()
        table = bars if isinstance(bars, pa.Table) else bars.to_arrow()
        frame = pl.from_arrow(marketdata.conform(table, "realtime bars"))
        assert isinstance(frame, pl.DataFrame)
        if frame.height == 0:
            return self._empty()
        if self.day is None:
            self.reset(frame.get_column("ts").max().astimezone(NEW_YORK).date())  # type: ignore[union-attr]
        us = pl.col("ts").dt.epoch("us")
        in_session = frame.filter((us >= self._start_us) & (us < self._end_us))
        other_day = frame.filter(pl.col("ts").dt.convert_time_zone(str(NEW_YORK)).dt.date() != self.day)
        if other_day.height:
            raise UsageError(
                f"bars for {other_day.get_column('ts').min()} arrived while predicting {self.day}; "
                "call reset(day) at the start of each trading day"
            )
        if in_session.height:
            self._add(in_session)
        t1 = time.perf_counter()
        t = self._latest
        lo = t - self.seq_len + 1
        if lo < 0:
            return self._empty()
        grid = {name: column[: t + 1] for name, column in self._grid.items()}
        features, mask, _ = compute_grid(grid, len(self._minutes), start=lo, state=self._state, labels=False)
        t2 = time.perf_counter()
        result = self._predict(features, mask[:, lo:], t)
        t3 = time.perf_counter()
        self.seconds = {"ingest": t1 - t0, "features": t2 - t1, "predict": t3 - t2, "total": t3 - t0}
        return result

    def _add(self, frame: pl.DataFrame) -> None:
        """Clean ``frame`` as batch does and put its rows into the day's grid."""
        names = sorted(frame.get_column("symbol").drop_nulls().unique().to_list())
        if not names:
            return
        rows, names, _, _ = clean_rows(frame, self.day, names, f"realtime bars of {self.day}")  # type: ignore[arg-type]
        if rows.height == 0:
            return
        self._add_symbols([s for s in names if s not in self._sid])
        sid = np.array([self._sid[s] for s in names], dtype=np.int64)[rows.get_column("sid").to_numpy()]
        tid = rows.get_column("tid").to_numpy().astype(np.int64)
        values = {name: rows.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy() for name in self._grid}
        seen = self._filled[tid, sid]
        if seen.any():  # an exact repeat of an earlier row is dropped, as batch drops duplicates
            differ = np.zeros(int(seen.sum()), dtype=np.bool_)
            for name, value in values.items():
                old, new = self._grid[name][tid[seen], sid[seen]], value[seen]
                differ |= ~((old == new) | (np.isnan(old) & np.isnan(new)))
            if differ.any():
                i = int(np.flatnonzero(seen)[np.argmax(differ)])
                when = self._minutes[tid[i]].astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc)
                raise DataError(
                    f"realtime bars of {self.day}: {int(differ.sum())} row(s) repeat an earlier (symbol, ts) with "
                    f"different values, e.g. symbol={self._symbols[sid[i]]!r} ts={when.isoformat()}; "
                    "send one row per symbol and minute"
                )
            tid, sid = tid[~seen], sid[~seen]
            values = {name: value[~seen] for name, value in values.items()}
        for name, value in values.items():
            self._grid[name][tid, sid] = value
        self._filled[tid, sid] = True
        self._rows_in += frame.height
        if len(tid):
            self._latest = max(self._latest, int(tid.max()))
            self._state.invalidate(int(tid.min()))  # a late row changes the day statistics from its minute on

    def _add_symbols(self, new: list[str]) -> None:
        """Empty grid columns for symbols first seen now (a minute without a row has volume 0)."""
        if not new:
            return
        for name in new:
            self._sid[name] = len(self._symbols)
            self._symbols.append(name)
        shape = (len(self._minutes), len(new))
        for name, old in self._grid.items():
            empty = np.zeros(shape) if name == "volume" else np.full(shape, np.nan)
            self._grid[name] = np.concatenate([old, empty], axis=1)
        self._filled = np.concatenate([self._filled, np.zeros(shape, dtype=np.bool_)], axis=1)

    def _predict(self, features: np.ndarray, mask: np.ndarray, t: int) -> pl.DataFrame:
        """The windows ending at minute ``t`` from the (S, seq_len, F) features of minutes ``t-seq_len+1..t``."""
        valid = np.flatnonzero(mask.all(axis=1)).astype(np.int32)
        if len(valid) == 0:
            return self._empty()
        scaled = self.scalers.transform(features, FEATURE_NAMES, self.feature_names, what=f"features of {self.day}")
        if len(self._buffer) < len(valid):
            self._buffer = np.empty((len(valid), *self._buffer.shape[1:]), dtype=np.float32)
        n = windows.gather_windows(scaled, valid, np.full(len(valid), self.seq_len - 1, dtype=np.int32),
                                   self._buffer, seq_len=self.seq_len)
        out = self.backend.predict(self._buffer[:n])
        ts = pl.Series("ts", np.full(n, self._minutes[t])).dt.replace_time_zone("UTC")
        table: dict[str, Any] = {
            "ts": ts,
            "symbol": pl.Series("symbol", self._symbols, dtype=pl.String).gather(valid),
            **{name: pl.Series(name, np.asarray(out[name], dtype=np.float32)) for name in OUTPUT_NAMES},
            "source_ts": ts.alias("source_ts"),
        }
        return pl.DataFrame(table).select(predictions.COLUMNS).sort("symbol")

    def _empty(self) -> pl.DataFrame:
        schema = {"ts": pl.Datetime("us", "UTC"), "symbol": pl.String, **dict.fromkeys(OUTPUT_NAMES, pl.Float32),
                  "source_ts": pl.Datetime("us", "UTC")}
        return pl.DataFrame(schema=schema)

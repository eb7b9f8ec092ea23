"""The batch engine as a library object for live systems: one minute of bars in, that minute's predictions out.

    predictor = RealtimePredictor.from_run("runs", "jennifer", backend="auto")
    predictor.reset(dt.date(2024, 3, 5))          # optional: the day is taken from the first bars
    rows = predictor.update(bars)                 # bars: polars DataFrame or Arrow table, raw schema
    # rows: ts, symbol, ret_1h, vol_10m, ret_conf, vol_conf, source_ts -- one per symbol whose
    # 30-minute window ending at the latest minute is valid, sorted by symbol

Exactness: the predictor keeps the day's clean grid so far in a ``features.DayGrid`` -- the
grid batch's ``build_day`` fills, with its cleaning, de-duplication and contradiction check --
and calls ``features.compute_grid`` -- the function batch calls -- for the latest ``seq_len``
minutes only. The day statistics (forward
fills, cumulative volume and VWAP, EMAs) live in a ``features.DayState`` that resumes from
the previous minute (from a late row's minute when one arrives; from the open when a new
symbol appears); windowed features are computed in a way whose bits do not depend on where
the arrays start. Its output for minute ``t`` is therefore the batch output for minute ``t``
(tests/runtime/test_realtime.py). docs/running.md has the latency.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time

import numpy as np
import polars as pl
import pyarrow as pa

from tthf.engine import predictions, windows
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data import marketdata
from tthf.engine.data.calendar import is_trading_day, timezone
from tthf.engine.features import FEATURE_NAMES, DayGrid, compute_grid
from tthf.engine.runs import Run, find_run
from tthf.engine.runtime.backends import Backend, open_backend
from tthf.engine.runtime.backends.base import FixedBatch
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
        #: the kernel writes the run's scaled inputs directly (Scalers.transform's bits)
        self._scale = self.scalers.kernel_scale(FEATURE_NAMES, self.feature_names, what="the run's features")
        self._tz = timezone(cfg.calendar)  # the exchange's local time: what "a trading day" means
        #: a minute's features are latency-bound: every core this process may use (same bits as one)
        self._threads = len(os.sched_getaffinity(0))
        self.grid: DayGrid | None = None
        self.seconds: dict[str, float] = {}  # where the last update's time went
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
    ) -> RealtimePredictor:
        """Open run ``run`` (an id or a unique prefix) and its best backend here (``auto``) or the one named."""
        opened = Run.open(find_run(store, run, experiment=experiment, model_type=model_type))
        return cls(opened, open_backend(opened, backend, rebuild=rebuild))

    @property
    def day(self) -> dt.date | None:
        return self.grid.day if self.grid is not None else None

    def reset(self, day: dt.date) -> None:
        """Start ``day``: forget the previous day's grid (windows never cross a day)."""
        calendar = self.run.config.calendar
        if not is_trading_day(day, calendar):
            raise DataError(
                f"{day} is not a trading day on {calendar} (weekend or holiday); there is nothing to predict"
            )
        self.grid = DayGrid(day, calendar)

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
            return predictions.empty()
        if self.grid is None:
            self.reset(frame.get_column("ts").max().astimezone(self._tz).date())  # type: ignore[union-attr]
        grid = self.grid
        assert grid is not None
        other_day = frame.filter(pl.col("ts").dt.convert_time_zone(str(self._tz)).dt.date() != grid.day)
        if other_day.height:
            raise UsageError(
                f"bars for {other_day.get_column('ts').min()!s} arrived while predicting {grid.day}; "
                "call reset(day) at the start of each trading day"
            )
        us = pl.col("ts").dt.epoch("us")
        in_session = frame.filter((us >= grid.session.start_us) & (us < grid.session.end_us))
        if in_session.height:
            grid.add(in_session, f"realtime bars of {grid.day}")
        t1 = time.perf_counter()
        t = grid.latest
        lo = t - self.seq_len + 1
        if lo < 0:
            return predictions.empty()
        scaled, mask, _ = compute_grid(
            grid.so_far(),
            grid.session.n_minutes,
            start=lo,
            state=grid.state,
            labels=False,
            scale=self._scale,
            threads=self._threads,
        )
        t2 = time.perf_counter()
        result = self._predict(grid, scaled, mask[:, lo:], t)
        t3 = time.perf_counter()
        self.seconds = {"ingest": t1 - t0, "features": t2 - t1, "predict": t3 - t2, "total": t3 - t0}
        return result

    def _predict(self, grid: DayGrid, scaled: np.ndarray, mask: np.ndarray, t: int) -> pl.DataFrame:
        """The windows ending at minute ``t`` from the (S, seq_len, F) scaled inputs of minutes ``t-seq_len+1..t``."""
        valid = np.flatnonzero(mask.all(axis=1)).astype(np.int32)
        if len(valid) == 0:
            return predictions.empty()
        fixed = self._fixed_batch(len(grid.symbols))
        if fixed is None and len(self._buffer) < len(valid):
            self._buffer = np.empty((len(valid), *self._buffer.shape[1:]), dtype=np.float32)
        n = windows.gather_windows(
            scaled,
            valid,
            np.full(len(valid), self.seq_len - 1, dtype=np.int32),
            self._buffer if fixed is None else fixed.inputs,
            seq_len=self.seq_len,
        )
        out = self.backend.predict(self._buffer[:n]) if fixed is None else fixed.run(n)
        ts = np.full(n, grid.minutes[t])
        symbols = pl.Series("symbol", grid.symbols, dtype=pl.String).gather(valid)
        return predictions.table(ts, symbols, {name: out[name] for name in OUTPUT_NAMES}, ts).sort("symbol")

    def _fixed_batch(self, n_symbols: int) -> FixedBatch | None:
        """The backend's fixed batch for all of today's symbols, remade only when they outgrow it.

        On TensorRT that is pinned buffers, one stream and a CUDA graph, allocated once, with
        one synchronization per minute (``TensorRTFixedBatch``); CPU backends have none and
        ``predict`` serves them.
        """
        if self._fixed is None or self._fixed.capacity < n_symbols:
            self._fixed = self.backend.fixed_batch(n_symbols)
        return self._fixed

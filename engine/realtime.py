"""The batch engine as a library object for live systems: one minute of bars in, that minute's predictions out.

    predictor = RealtimePredictor.from_run("runs", "jennifer", backend="auto")
    predictor.reset(dt.date(2024, 3, 5))          # optional: the day is taken from the first bars
    rows = predictor.update(bars)                 # bars: polars DataFrame or Arrow table, raw schema
    # rows: ts, symbol, ret_1h, vol_10m, ret_conf, vol_conf, source_ts -- one per symbol whose
    # 30-minute window ending at the latest minute is valid, sorted by symbol

Exactness: every feature at minute ``t`` is a function of the day's rows at or before
``t`` (engine/features.py), and some are expanding day statistics (cumulative volume and
VWAP, recursive EMAs, the day's open, day realized volatility). So the predictor keeps the
day's regular-session rows so far (at most symbols x 390 rows; extended-hours rows are
dropped as batch drops them), rebuilds the features with the very code batch uses, and
predicts only the windows ending at the latest minute. Its output for minute ``t`` is the
batch output for minute ``t`` (tests/test_realtime.py). docs/running.md has the latency.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from tthf.engine import marketdata, predictions, windows
from tthf.engine.backends import Backend, open_backend
from tthf.engine.calendar import NEW_YORK, session_bounds
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.daydata import DayFeatures
from tthf.engine.features import build_day
from tthf.engine.runs import SCALERS, Run, find_run
from tthf.engine.scalers import Scalers
from tthf.engine.store import Store
from tthf.errors import UsageError

log = logging.getLogger("tthf.realtime")


class RealtimePredictor:
    """Predictions minute by minute, computed exactly as ``tthf-run --dense`` computes them."""

    def __init__(self, run: Run, backend: Backend) -> None:
        cfg = run.config
        self.run = run
        self.backend = backend
        self.seq_len = cfg.seq_len
        self.feature_names = list(cfg.feature_names)
        self.scalers = Scalers.from_json(run.read_text(SCALERS), source=run.store.uri(SCALERS))
        self.day: dt.date | None = None
        self.seconds: dict[str, float] = {}  # where the last update's time went
        self._rows: list[pl.DataFrame] = []
        self._buffer = np.empty((0, cfg.seq_len, len(self.feature_names)), dtype=np.float32)

    @classmethod
    def from_run(cls, store: Store | str, run: str, *, backend: str = "auto", experiment: str | None = None,
                 model_type: str | None = None) -> RealtimePredictor:
        """Open run ``run`` (an id or a unique prefix) and its best backend here (``auto``) or the one named."""
        opened = Run.open(find_run(store, run, experiment=experiment, model_type=model_type))
        return cls(opened, open_backend(opened, backend))

    def reset(self, day: dt.date) -> None:
        """Start ``day``: forget the previous day's history (windows never cross a day)."""
        self.day = day
        self._rows = []
        self._start_us = int(session_bounds(day)[0].timestamp()) * 1_000_000
        self._end_us = int(session_bounds(day)[1].timestamp()) * 1_000_000

    @property
    def rows_kept(self) -> int:
        return sum(f.height for f in self._rows)

    def update(self, bars: pl.DataFrame | pa.Table) -> pl.DataFrame:
        """Add the newest bars (one minute, or several to catch up) and predict the latest minute.

        The latest minute is the latest regular-session ``ts`` seen today. Bars outside the
        regular session are ignored; a bar for another trading day is an error (call
        ``reset``). Bad values are cleaned as in batch; rows that contradict an earlier row of
        the same (symbol, minute) raise ``DataError``.
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
            self._rows.append(in_session)
        if not self._rows:
            return self._empty()
        history = pl.concat(self._rows, rechunk=True)
        self._rows = [history]
        t1 = time.perf_counter()
        feats = build_day(history, self.day, source=f"realtime bars of {self.day}")  # type: ignore[arg-type]
        t2 = time.perf_counter()
        latest = int((history.get_column("ts").dt.epoch("us").max() - self._start_us) // 60_000_000)  # type: ignore[operator]
        result = self._predict(feats, latest)
        t3 = time.perf_counter()
        self.seconds = {"ingest": t1 - t0, "features": t2 - t1, "predict": t3 - t2, "total": t3 - t0}
        return result

    def _predict(self, feats: DayFeatures, t: int) -> pl.DataFrame:
        """The windows ending at minute ``t``: scaled from the last ``seq_len`` minutes only."""
        lo = t - self.seq_len + 1
        if lo < 0:
            return self._empty()
        valid = np.flatnonzero(feats.mask[:, lo:t + 1].all(axis=1)).astype(np.int32)
        if len(valid) == 0:
            return self._empty()
        tail = DayFeatures(
            date=feats.date, symbols=feats.symbols, minutes=feats.minutes[lo:t + 1],
            feature_names=feats.feature_names, features=np.ascontiguousarray(feats.features[:, lo:t + 1]),
            mask=np.ascontiguousarray(feats.mask[:, lo:t + 1]), labels=feats.labels[:, lo:t + 1],
        )
        scaled = self.scalers.transform(tail, self.feature_names)
        if len(self._buffer) < len(valid):
            self._buffer = np.empty((len(valid), *self._buffer.shape[1:]), dtype=np.float32)
        n = windows.gather_windows(scaled, valid, np.full(len(valid), self.seq_len - 1, dtype=np.int32),
                                   self._buffer, seq_len=self.seq_len)
        out = self.backend.predict(self._buffer[:n])
        ts = pl.Series("ts", np.full(n, feats.minutes[t])).dt.replace_time_zone("UTC")
        table: dict[str, Any] = {
            "ts": ts,
            "symbol": pl.Series("symbol", feats.symbols, dtype=pl.String).gather(valid),
            **{name: pl.Series(name, np.asarray(out[name], dtype=np.float32)) for name in OUTPUT_NAMES},
            "source_ts": ts.alias("source_ts"),
        }
        return pl.DataFrame(table).select(predictions.COLUMNS)

    def _empty(self) -> pl.DataFrame:
        schema = {"ts": pl.Datetime("us", "UTC"), "symbol": pl.String, **dict.fromkeys(OUTPUT_NAMES, pl.Float32),
                  "source_ts": pl.Datetime("us", "UTC")}
        return pl.DataFrame(schema=schema)

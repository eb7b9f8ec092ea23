"""One date's work, the same for every executor: its stages, the ``DayPredictor`` they use, and ``finish``.

read -> features -> predict -> encode (``day_stages``, run by ``tthf.engine.runtime.stages``),
then ``finish`` writes the date's file atomically and turns its pipeline item into the
manifest entry. The local executor overlaps these stages over many dates; a Ray worker runs
them one after another for each date it is given.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import polars as pl

from tthf.engine import predictions, windows
from tthf.engine.data import marketdata
from tthf.engine.runs import Run, output_key
from tthf.engine.runtime.backends import Backend
from tthf.engine.runtime.host_workers import HostPool, ScaledDay, read_raw, scale_raw
from tthf.engine.runtime.manifest import DateResult
from tthf.engine.runtime.runner import DayOutputs, make_runner
from tthf.engine.runtime.stages import Item, Stage
from tthf.engine.store import Store
from tthf.errors import DataError, StoreError

log = logging.getLogger("tthf.run")

__all__ = ["DayPredictor", "day_stages", "finish", "host_stages"]


class DayPredictor:
    """Everything that turns one day's raw bars into its predictions table; built once per run.

    ``features`` and ``predict_features`` are the two compute stages of the pipeline.
    """

    def __init__(self, run: Run, backend: Backend, *, stride: int, batch_size: int, windowing: str = "auto") -> None:
        cfg = run.config
        self.feature_names = list(cfg.feature_names)
        self.seq_len = cfg.model.seq_len
        self.stride = stride
        self.scalers = run.load_scalers()
        self.calendar = cfg.calendar
        self.runner = make_runner(
            backend, capacity=batch_size, seq_len=self.seq_len, n_features=len(self.feature_names), windowing=windowing
        )

    def features(
        self, raw: pl.DataFrame, day: dt.date, *, source: str = "", counts: dict[str, int] | None = None
    ) -> ScaledDay:
        """The day's features scaled in the run's order; its cleaning counts follow ``counts`` (the reader's)."""
        return scale_raw(
            raw, day, self.scalers, self.feature_names, source=source, calendar=self.calendar, counts=counts or {}
        )

    def predict_features(self, day: ScaledDay) -> tuple[pl.DataFrame, DayOutputs]:
        """Predictions table of a day from its scaled grid; the runner's outputs say where time went."""
        result = self.runner.run(day.scaled, day.mask, stride=self.stride)
        dense_pos = (
            (result.sym, result.minute) if self.stride == 1 else windows.window_positions(day.mask, self.seq_len, 1)
        )
        frame = predictions.assemble(
            day.symbols,
            day.minutes,
            dense_pos,
            (result.sym, result.minute),
            result.outputs,
            seq_len=self.seq_len,
            stride=self.stride,
        )
        return frame, result


@dataclass
class RawDay:
    raw: pl.DataFrame
    counts: dict[str, int]


@dataclass
class PredictedDay:
    frame: pl.DataFrame
    outputs: DayOutputs
    counts: dict[str, int]


@dataclass
class EncodedDay:
    data: bytes
    rows: int
    outputs: DayOutputs
    counts: dict[str, int]


def host_stages(predictor: DayPredictor, data_root: Store, *, pool: HostPool | None = None) -> list[Stage]:
    """A date's host side: read -> features in this process, or both in ``pool``'s workers.

    On a pool they are one stage, ``transfer``: the workers time read and features, and the
    rest of the stage is the hand-over (the date to the worker, its scaled grid back).
    """
    if pool is not None:
        return [("transfer", lambda day, _: pool.day(day))]

    def read(day: dt.date, _: None) -> RawDay:
        return RawDay(*read_raw(data_root, day, predictor.calendar))

    def features(day: dt.date, state: RawDay) -> ScaledDay:
        source = data_root.uri(marketdata.partition(day))
        return predictor.features(state.raw, day, source=source, counts=state.counts)

    return [("read", read), ("features", features)]


def day_stages(predictor: DayPredictor, data_root: Store, fmt: str, *, pool: HostPool | None = None) -> list[Stage]:
    """The host stages -> predict -> encode; the caller writes (it owns the manifest)."""

    def predict(day: dt.date, state: ScaledDay) -> PredictedDay:
        frame, outputs = predictor.predict_features(state)
        return PredictedDay(frame, outputs, state.counts)

    def encode(day: dt.date, state: PredictedDay) -> EncodedDay:
        data = predictions.encode(state.frame, fmt)
        return EncodedDay(data, state.frame.height, state.outputs, state.counts)

    return [*host_stages(predictor, data_root, pool=pool), ("predict", predict), ("encode", encode)]


def finish(run: Run, item: Item, fmt: str, settings: str, backend: str, *, executor: str, worker: str) -> DateResult:
    """Write a date's file (atomic) and turn its pipeline item into the manifest entry.

    ``executor`` and ``worker`` say where the date ran (recorded, not part of the settings key).
    """
    day: dt.date = item.key
    key = output_key(day, fmt)
    error = item.error
    if error is None:
        state: EncodedDay = item.payload
        t0 = time.perf_counter()
        try:
            run.write_bytes(key, state.data)
        except StoreError as exc:
            error = exc
        item.seconds["write"] = time.perf_counter() - t0
    if error is not None:
        if not isinstance(error, (DataError, StoreError)):
            raise error
        reason = " ".join(str(error).split())  # one line
        log.warning("%s failed in %s: %s", day, item.failed_in or "write", reason)
        return DateResult(
            day.isoformat(),
            "failed",
            reason=reason,
            settings=settings,
            backend=backend,
            executor=executor,
            worker=worker,
        )
    seconds = dict(item.seconds)
    seconds["windows"] = state.outputs.seconds["windows"]
    seconds["inference"] = state.outputs.seconds["inference"]
    seconds["total"] = sum(item.seconds.values())
    return DateResult(
        day.isoformat(),
        "ok",
        rows=state.rows,
        windows=len(state.outputs.sym),
        seconds={k: round(v, 4) for k, v in seconds.items()},
        counts=state.counts,
        file=run.store.uri(key),
        settings=settings,
        backend=backend,
        windowing=state.outputs.windowing,
        executor=executor,
        worker=worker,
    )

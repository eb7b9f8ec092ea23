"""One date's work, the same for every executor: the ``Day`` that moves through the stages, the stages, ``finish``.

read -> features (``DayHost``) -> predict (``DayPredictor``) -> encode, run by
``tthf.engine.runtime.stages``; then ``finish`` writes the date's file atomically and turns
its pipeline item into the manifest entry. One ``Day`` goes through every stage: each fills
in its part and lets go of the one before, so a date in flight holds one form of its data at
a time; the pipeline item carries the stage timings. The local executor overlaps the stages
over many dates (and may run the host side in worker processes,
``tthf.engine.runtime.host_workers``); a Ray worker runs them one after another for each
date it is given.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import polars as pl

from tthf.engine import predictions, windows
from tthf.engine.config import RunConfig
from tthf.engine.data import marketdata
from tthf.engine.data.featurefiles import read_feature_day
from tthf.engine.features import FileInputs, ScaledDayFeatures, Scalers, build_scaled_day
from tthf.engine.inference_manifest import DateResult
from tthf.engine.runs import Run, output_key
from tthf.engine.runtime.backends import REGISTRY, Backend
from tthf.engine.runtime.options import RunOptions
from tthf.engine.runtime.runner import DayOutputs, make_runner
from tthf.engine.runtime.stages import Item, Stage
from tthf.engine.store import Store, open_store
from tthf.errors import DataError, StoreError

log = logging.getLogger("tthf.run")

__all__ = ["Day", "DayHost", "DayPredictor", "day_stages", "encode", "finish"]


@dataclass
class Day:
    """One date on its way through the stages; each stage sets its field and clears the one it consumed."""

    date: dt.date
    counts: dict[str, int] = field(default_factory=dict)  # cleaning counts: the reader's, then the features'
    raw: pl.DataFrame | None = None  # read: the raw bars (a run with computed features)
    file_rows: pl.DataFrame | None = None  # read: the feature files' rows (a run that reads some from files)
    features: ScaledDayFeatures | None = None  # features: the scaled grid and where each cell is
    frame: pl.DataFrame | None = None  # predict: the predictions table
    outputs: DayOutputs | None = None  # predict: the windows' outputs and where the time went
    encoded: bytes = b""  # encode: the file's bytes
    rows: int = 0  # encode: the file's rows


class DayHost:
    """A date's host side for one run and data root: read its raw bars and/or its feature files, build its features
    scaled in the run's order.

    A run with ``feature_files`` reads those names from the user's files (opened from the
    run's config) and computes the others from the raw bars of ``data``; it reads no raw
    bars when it computes nothing.
    """

    def __init__(self, run: Run, data: Store) -> None:
        self._setup(run.config, run.load_scalers(), data)

    @classmethod
    def from_config(cls, cfg: RunConfig, scalers: Scalers, data: Store) -> DayHost:
        """The host side before a run exists (``tthf-import`` validates on real days before it writes the run)."""
        host = cls.__new__(cls)
        host._setup(cfg, scalers, data)
        return host

    def build(self, date: dt.date) -> ScaledDayFeatures:
        """Read and build one date in this process: its scaled grid."""
        feats = self.features(self.read(date)).features
        assert feats is not None
        return feats

    def _setup(self, cfg: RunConfig, scalers: Scalers, data: Store) -> None:
        self.data = data
        self.scalers = scalers
        self.feature_names = list(cfg.feature_names)
        self.calendar = cfg.calendar
        self.files = cfg.feature_files
        # the data root's S3 endpoint reaches the feature root too (a worker's environment may not name it)
        endpoint = data.locator().endpoint_url
        self.file_store = open_store(self.files.root, endpoint_url=endpoint) if self.files else None
        self.computed = cfg.computed_names

    def read(self, date: dt.date) -> Day:
        """The read stage: the date's raw rows and/or feature-file rows, and the readers' counts."""
        day = Day(date)
        if self.computed:
            day.raw = marketdata.read_day(self.data, date, counts=day.counts, calendar=self.calendar)
        if self.files is not None:
            assert self.file_store is not None
            day.file_rows = read_feature_day(self.file_store, self.files, date, self.files.columns, counts=day.counts)
        return day

    def features(self, day: Day) -> Day:
        """The features stage: the scaled grid, exactly as training built it; its counts follow the reader's."""
        assert day.raw is not None or day.file_rows is not None, "features before read"
        source = self.data.uri(marketdata.partition(day.date))
        files = None
        if self.files is not None:
            assert day.file_rows is not None
            files = FileInputs(day.file_rows, list(self.files.columns), self.files.fill)
        feats = build_scaled_day(
            day.raw, day.date, self.scalers, self.feature_names, files=files, source=source, calendar=self.calendar
        )
        day.features, day.raw, day.file_rows = feats, None, None
        day.counts.update(feats.counts)
        return day

    def stages(self) -> list[Stage]:
        """read -> features in this process."""
        return [("read", lambda date, _: self.read(date)), ("features", lambda _, day: self.features(day))]


class DayPredictor:
    """A day's scaled features to its predictions table: windows, the backend, the table; built once per run."""

    def __init__(
        self, run: Run | RunConfig, backend: Backend, *, stride: int, batch_size: int, windowing: str = "auto"
    ) -> None:
        cfg = run if isinstance(run, RunConfig) else run.config  # a config: tthf-import's golden check
        self.seq_len = cfg.model.seq_len
        self.stride = stride
        self.runner = make_runner(
            backend, capacity=batch_size, seq_len=self.seq_len, n_features=len(cfg.feature_names), windowing=windowing
        )

    def predict(self, day: Day) -> Day:
        """The predict stage: the predictions table and the runner's outputs (they say where the time went)."""
        feats = day.features
        assert feats is not None, "predict before features"
        result = self.runner.run(feats.scaled, feats.mask, stride=self.stride)
        dense_pos = (
            (result.sym, result.minute) if self.stride == 1 else windows.window_positions(feats.mask, self.seq_len, 1)
        )
        day.frame = predictions.assemble(
            feats.symbols,
            feats.minutes,
            dense_pos,
            (result.sym, result.minute),
            result.outputs,
            seq_len=self.seq_len,
            stride=self.stride,
        )
        day.outputs, day.features = result, None
        return day


def encode(day: Day, fmt: str) -> Day:
    """The encode stage: the predictions file's bytes in ``fmt``."""
    assert day.frame is not None, "encode before predict"
    day.encoded, day.rows, day.frame = predictions.encode(day.frame, fmt), day.frame.height, None
    return day


def day_stages(host: list[Stage], predictor: DayPredictor, fmt: str) -> list[Stage]:
    """A date's stages: its ``host`` side (``DayHost.stages`` or a host pool's), predict, encode; ``finish`` writes."""
    return [*host, ("predict", lambda _, day: predictor.predict(day)), ("encode", lambda _, day: encode(day, fmt))]


def finish(
    run: Run, item: Item, options: RunOptions, settings: str, backend: str, *, executor: str, worker: str
) -> DateResult:
    """Write a date's file (atomic) into ``options``' prediction set and turn its pipeline item into the
    manifest entry.

    ``executor`` and ``worker`` say where the date ran (recorded, not part of the settings key).
    """
    date: dt.date = item.key
    key = output_key(date, options.fmt, options.predictions)
    error = item.error
    if error is None:
        day: Day = item.payload
        t0 = time.perf_counter()
        try:
            run.write_bytes(key, day.encoded)
        except StoreError as exc:
            error = exc
        item.seconds["write"] = time.perf_counter() - t0
    if error is not None:
        if not isinstance(error, (DataError, StoreError)):
            raise error
        reason = " ".join(str(error).split())  # one line
        log.warning("%s failed in %s: %s", date, item.failed_in or "write", reason)
        return DateResult(
            date.isoformat(),
            "failed",
            reason=reason,
            settings=settings,
            backend=backend,
            executor=executor,
            worker=worker,
            precision=REGISTRY[backend].precision,
        )
    outputs = day.outputs
    assert outputs is not None, "finish before predict"
    seconds = dict(item.seconds)
    seconds["windows"] = outputs.seconds["windows"]
    seconds["inference"] = outputs.seconds["inference"]
    seconds["total"] = sum(item.seconds.values())
    return DateResult(
        date.isoformat(),
        "ok",
        rows=day.rows,
        windows=len(outputs.sym),
        seconds={k: round(v, 4) for k, v in seconds.items()},
        counts=day.counts,
        file=run.store.uri(key),
        settings=settings,
        backend=backend,
        windowing=outputs.windowing,
        executor=executor,
        worker=worker,
        precision=REGISTRY[backend].precision,
    )

"""Batch inference over many dates: ``tthf-run``'s library function.

Per date, as overlapping stages (engine/pipeline.py, bounded queues): read the raw bars
(local or S3; the next dates are read while this one computes), build the features
exactly as training did and scale them in the run's feature order, cut windows with the
C++ kernel straight into the next free (pinned, on GPU) buffer and predict with the
chosen backend (engine/gpu.py), encode, and write one predictions file into the run's
``inference/`` folder atomically. A run manifest, ``inference/manifest.json``, is
rewritten (atomically) after every date with its outcome, so a killed run loses at most
the dates in flight; a rerun skips dates already done with the same model and settings.
A date that fails is recorded with a one-line reason and the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

import tthf
from tthf.engine import predictions, windows
from tthf.engine.data import marketdata
from tthf.engine.runtime.backends import Backend, open_backend
from tthf.engine.data.dates import parse_dates
from tthf.engine.features.day import DayFeatures
from tthf.engine.features import build_day
from tthf.engine.runtime.runner import WINDOWING, DayOutputs, make_runner
from tthf.engine.runtime.stages import Item, Pipeline, Stage
from tthf.engine.runs import CHECKPOINT, INFERENCE_DIR, SCALERS, Run, find_run
from tthf.engine.features.scalers import Scalers
from tthf.engine.store import KeyNotFoundError, Store, as_store
from tthf.errors import DataError, StoreError, UsageError

log = logging.getLogger("tthf.run")

MANIFEST = f"{INFERENCE_DIR}/manifest.json"


@dataclass(frozen=True)
class RunOptions:
    """What ``tthf-run`` was asked to do; its ``settings`` are recorded in the run manifest."""

    dates: str
    dense: bool = False
    sample_every: int | None = None
    backend: str = "auto"
    batch_size: int = 4096
    fmt: str = "csv"
    overwrite: bool = False
    data_root: str | None = None
    fail_fast: bool = False
    overlap: bool = True  # False: the stages one after another (to measure the overlap)
    windowing: str = "auto"  # GPU only: where windows are cut (tthf.engine.runtime.runner.WINDOWING)

    def stride(self, run: Run) -> int:
        if self.dense:
            return 1
        stride = self.sample_every if self.sample_every is not None else run.config.sample_every
        if stride < 1:
            raise UsageError(f"--sample-every must be >= 1, got {stride}")
        return stride

    def check(self) -> None:
        if self.fmt not in predictions.FORMATS:
            raise UsageError(f"unknown --format {self.fmt!r}; use one of {', '.join(predictions.FORMATS)}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.windowing not in WINDOWING:
            raise UsageError(f"unknown --windowing {self.windowing!r}; use one of {', '.join(WINDOWING)}")


@dataclass
class DateResult:
    """The outcome of one date, as written to the run manifest."""

    date: str
    status: str  # "ok", "failed", "skipped" (already done), "no_data"
    rows: int = 0
    windows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    file: str = ""
    settings: str = ""
    backend: str = ""
    windowing: str = ""  # "host" or "device": where the windows were cut


@dataclass
class InferenceSummary:
    run: str
    backend: str
    stride: int
    results: list[DateResult]
    seconds: float
    overlap: bool = True
    pipeline_seconds: float = 0.0  # wall time of the dates that were computed

    def stage_seconds(self) -> dict[str, float]:
        """Busy seconds per stage over the dates computed in this call (read, features, ...)."""
        total: dict[str, float] = {}
        for r in self.by_status("ok"):
            for k, v in r.seconds.items():
                total[k] = total.get(k, 0.0) + v
        return total

    def by_status(self, status: str) -> list[DateResult]:
        return [r for r in self.results if r.status == status]

    @property
    def windows(self) -> int:
        return sum(r.windows for r in self.results if r.status == "ok")

    @property
    def exit_code(self) -> int:
        return 1 if self.by_status("failed") else 0


class DayPredictor:
    """Everything that turns one day's raw bars into its predictions table; built once per run.

    ``features`` and ``predict_features`` are the two compute stages of the pipeline.
    """

    def __init__(self, run: Run, backend: Backend, *, stride: int, batch_size: int, windowing: str = "auto") -> None:
        cfg = run.config
        self.feature_names = list(cfg.feature_names)
        self.seq_len = cfg.seq_len
        self.stride = stride
        self.scalers = Scalers.from_json(run.read_text(SCALERS), source=run.ref.store.uri(SCALERS))
        self.runner = make_runner(backend, capacity=batch_size, seq_len=cfg.seq_len,
                                  n_features=len(self.feature_names), windowing=windowing)

    def features(self, raw: pl.DataFrame, day: dt.date, *, source: str = "") -> tuple[DayFeatures, np.ndarray]:
        """The day's features (cleaning counts included) and their scaled grid in the run's order."""
        feats = build_day(raw, day, source=source)
        return feats, self.scalers.transform(feats, self.feature_names)

    def predict_features(self, feats: DayFeatures, scaled: np.ndarray) -> tuple[pl.DataFrame, DayOutputs]:
        """Predictions table of a day from its scaled grid; the runner's outputs say where time went."""
        result = self.runner.run(scaled, feats.mask, stride=self.stride)
        dense_pos = windows.window_positions(feats.mask, self.seq_len, 1)
        frame = predictions.assemble(feats.symbols, feats.minutes, dense_pos, (result.sym, result.minute),
                                     result.outputs, seq_len=self.seq_len, stride=self.stride)
        return frame, result


def _settings_key(run: Run, options: RunOptions, stride: int, backend: str, data_root: str) -> str:
    """Identifies a date's output: same key means a rerun may skip it."""
    checkpoint = hashlib.sha256(run.read_bytes(CHECKPOINT)).hexdigest()
    scalers = hashlib.sha256(run.read_bytes(SCALERS)).hexdigest()
    payload = json.dumps(
        {"checkpoint": checkpoint, "scalers": scalers, "stride": stride, "format": options.fmt, "backend": backend,
         "data_root": data_root},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _load_manifest(run: Run) -> dict:
    try:
        manifest = json.loads(run.read_text(MANIFEST))
    except KeyNotFoundError:
        return {"dates": {}}
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; starting a new one (dates will be redone)", run.ref.store.uri(MANIFEST))
        return {"dates": {}}
    manifest.setdefault("dates", {})
    return manifest


def output_key(day: dt.date, fmt: str) -> str:
    return f"{INFERENCE_DIR}/{day.isoformat()}.{fmt}"


def _versions(backend: Backend) -> dict[str, str]:
    import torch

    return {
        "tthf": tthf.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "polars": pl.__version__,
        "numpy": np.__version__,
        **backend.versions(),
    }


def run_inference(
    store: Store | str,
    run_name: str,
    options: RunOptions,
    *,
    experiment: str | None = None,
    model_type: str | None = None,
    on_date: Callable[[DateResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> InferenceSummary:
    """Predict every selected date of ``run_name`` and write one file per date (see module doc).

    ``on_start(n)`` is called once with the number of dates, ``on_date`` with each date's
    result as soon as it is final (in date order).
    """
    options.check()
    started = time.perf_counter()
    run = Run.open(find_run(store, run_name, experiment=experiment, model_type=model_type))
    stride = options.stride(run)
    data_root = as_store(options.data_root or run.config.data_root)
    available = marketdata.list_dates(data_root)
    selection = parse_dates(options.dates, available)
    backend = open_backend(run, options.backend)
    predictor = DayPredictor(run, backend, stride=stride, batch_size=options.batch_size, windowing=options.windowing)
    settings = _settings_key(run, options, stride, backend.name, data_root.uri())
    manifest = _load_manifest(run)
    manifest.update(
        run=run.ref.name,
        settings={"key": settings, "backend": backend.name, "stride": stride, "dense": options.dense,
                  "format": options.fmt, "data_root": data_root.uri()},
        versions=_versions(backend),
    )
    if on_start:
        on_start(len(selection.dates) + len(selection.missing))
    results: list[DateResult] = []

    def report(result: DateResult) -> None:
        results.append(result)
        if on_date:
            on_date(result)

    for day in selection.missing:
        missing = DateResult(day.isoformat(), "no_data", reason=f"no data under {data_root.uri(marketdata.partition(day))}")
        manifest["dates"][missing.date] = dataclasses.asdict(missing)
        report(missing)
    # skipped dates are reported in date order among the computed ones (--fail-fast stops there)
    skipped: list[DateResult] = []
    todo = []
    for day in selection.dates:
        done = _already_done(run, manifest, day, options, settings)
        if done:
            skipped.append(done)
        else:
            todo.append(day)
    stages = _stages(predictor, data_root, options.fmt)
    wall = time.perf_counter()
    stopped = False
    with contextlib.closing(Pipeline(stages, overlap=options.overlap).run(todo)) as items:
        for item in items:
            while skipped and skipped[0].date < item.key.isoformat():
                report(skipped.pop(0))
            result = _finish(run, item, options.fmt, settings, backend.name)
            manifest["dates"][result.date] = dataclasses.asdict(result)
            run.write_text(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            report(result)
            if result.status == "failed" and options.fail_fast:
                stopped = True
                break
    if not stopped:
        for result in skipped:
            report(result)
    if selection.missing:
        run.write_text(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    wall = time.perf_counter() - wall
    results.sort(key=lambda r: r.date)
    return InferenceSummary(run.ref.name, backend.name, stride, results, time.perf_counter() - started,
                            overlap=options.overlap, pipeline_seconds=wall)


def _already_done(run: Run, manifest: dict, day: dt.date, options: RunOptions, settings: str) -> DateResult | None:
    key = output_key(day, options.fmt)
    previous = manifest["dates"].get(day.isoformat(), {})
    if (options.overwrite or previous.get("status") != "ok" or previous.get("settings") != settings
            or not run.exists(key)):
        return None
    return DateResult(day.isoformat(), "skipped", rows=previous.get("rows", 0), windows=previous.get("windows", 0),
                      file=run.ref.store.uri(key), settings=settings, backend=previous.get("backend", ""),
                      reason="already done with the same model and settings")


@dataclass
class _Day:
    """What travels between the stages for one date."""

    raw: pl.DataFrame | None = None
    counts: dict[str, int] = field(default_factory=dict)
    feats: DayFeatures | None = None
    scaled: np.ndarray | None = None
    frame: pl.DataFrame | None = None
    outputs: DayOutputs | None = None
    data: bytes = b""


def _stages(predictor: DayPredictor, data_root: Store, fmt: str) -> list[Stage]:
    """read -> features -> predict -> encode; the caller writes (it owns the manifest)."""

    def read(day: dt.date, _: None) -> _Day:
        counts: dict[str, int] = {}
        return _Day(raw=marketdata.read_day(data_root, day, counts=counts), counts=counts)

    def features(day: dt.date, state: _Day) -> _Day:
        assert state.raw is not None
        state.feats, state.scaled = predictor.features(state.raw, day, source=data_root.uri(marketdata.partition(day)))
        state.raw = None
        return state

    def predict(day: dt.date, state: _Day) -> _Day:
        assert state.feats is not None and state.scaled is not None
        state.frame, state.outputs = predictor.predict_features(state.feats, state.scaled)
        state.counts.update(state.feats.counts)
        state.feats = state.scaled = None
        return state

    def encode(day: dt.date, state: _Day) -> _Day:
        assert state.frame is not None
        state.data = predictions.encode(state.frame, fmt)
        return state

    return [("read", read), ("features", features), ("predict", predict), ("encode", encode)]


def _finish(run: Run, item: Item, fmt: str, settings: str, backend: str) -> DateResult:
    """Write a date's file (atomic) and turn its pipeline item into the manifest entry."""
    day: dt.date = item.key
    key = output_key(day, fmt)
    error = item.error
    if error is None:
        state: _Day = item.payload
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
        return DateResult(day.isoformat(), "failed", reason=reason, settings=settings, backend=backend)
    assert state.frame is not None and state.outputs is not None
    seconds = dict(item.seconds)
    seconds["windows"] = state.outputs.seconds["windows"]
    seconds["inference"] = state.outputs.seconds["inference"]
    seconds["total"] = sum(item.seconds.values())
    return DateResult(day.isoformat(), "ok", rows=state.frame.height, windows=len(state.outputs.sym),
                      seconds={k: round(v, 4) for k, v in seconds.items()}, counts=state.counts,
                      file=run.ref.store.uri(key), settings=settings, backend=backend,
                      windowing=state.outputs.windowing)

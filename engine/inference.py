"""Batch inference over many dates: ``tthf-run``'s library function.

Per date: read the raw bars (local or S3), build the features exactly as training did,
scale them with the run's scalers in the run's feature order, cut windows with the C++
kernel into one reused buffer, predict with the chosen backend, and write one
predictions file into the run's ``inference/`` folder atomically. A run manifest,
``inference/manifest.json``, records every date's outcome; a rerun skips dates already
done with the same model and settings. A date that fails is recorded with a one-line
reason and the others go on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

import tthf
from tthf.engine import marketdata, predictions, windows
from tthf.engine.backends import Backend, open_backend
from tthf.engine.dates import parse_dates
from tthf.engine.features import build_day
from tthf.engine.runs import CHECKPOINT, INFERENCE_DIR, SCALERS, Run, find_run
from tthf.engine.scalers import Scalers
from tthf.engine.store import KeyNotFoundError, Store, as_store
from tthf.errors import DataError, StoreError, TthfError, UsageError

log = logging.getLogger("tthf.run")

MANIFEST = f"{INFERENCE_DIR}/manifest.json"


@dataclass(frozen=True)
class RunOptions:
    """What ``tthf-run`` was asked to do; its ``settings`` are recorded in the run manifest."""

    dates: str
    dense: bool = False
    sample_every: int | None = None
    backend: str = "torch"
    batch_size: int = 4096
    fmt: str = "csv"
    overwrite: bool = False
    data_root: str | None = None
    fail_fast: bool = False

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


@dataclass
class InferenceSummary:
    run: str
    backend: str
    stride: int
    results: list[DateResult]
    seconds: float

    def by_status(self, status: str) -> list[DateResult]:
        return [r for r in self.results if r.status == status]

    @property
    def windows(self) -> int:
        return sum(r.windows for r in self.results if r.status == "ok")

    @property
    def exit_code(self) -> int:
        return 1 if self.by_status("failed") else 0


class DayPredictor:
    """Everything that turns one day's raw bars into its predictions table; built once per run."""

    def __init__(self, run: Run, backend: Backend, *, stride: int, batch_size: int) -> None:
        cfg = run.config
        self.feature_names = list(cfg.feature_names)
        self.seq_len = cfg.seq_len
        self.stride = stride
        self.backend = backend
        self.scalers = Scalers.from_json(run.read_text(SCALERS), source=run.ref.store.uri(SCALERS))
        self.buffer = np.empty((batch_size, cfg.seq_len, len(self.feature_names)), dtype=np.float32)
        self.sym_out = np.empty(batch_size, dtype=np.int32)
        self.minute_out = np.empty(batch_size, dtype=np.int32)

    def predict(self, raw: pl.DataFrame, day: dt.date, *, source: str = "") -> tuple[pl.DataFrame, dict[str, float], dict[str, int]]:
        """Predictions table, per-stage seconds and cleaning counts of one day."""
        t0 = time.perf_counter()
        feats = build_day(raw, day, source=source)
        scaled = self.scalers.transform(feats, self.feature_names)
        t1 = time.perf_counter()
        total = windows.count_windows(feats.mask, self.seq_len, self.stride)
        outputs = {name: np.empty(total, dtype=np.float32) for name in predictions.OUTPUT_NAMES}
        sym = np.empty(total, dtype=np.int32)
        minute = np.empty(total, dtype=np.int32)
        infer_s = 0.0
        start = 0
        while start < total:
            n, nxt = windows.cut_windows(
                scaled, feats.mask, self.buffer, seq_len=self.seq_len, stride=self.stride, start=start,
                sym_out=self.sym_out, minute_out=self.minute_out,
            )
            t_inf = time.perf_counter()
            batch = self.backend.predict(self.buffer[:n])
            infer_s += time.perf_counter() - t_inf
            for name in predictions.OUTPUT_NAMES:
                outputs[name][start:nxt] = batch[name]
            sym[start:nxt] = self.sym_out[:n]
            minute[start:nxt] = self.minute_out[:n]
            start = nxt
        dense_pos = windows.window_positions(feats.mask, self.seq_len, 1)
        frame = predictions.assemble(
            feats.symbols, feats.minutes, dense_pos, (sym, minute), outputs, seq_len=self.seq_len, stride=self.stride
        )
        t2 = time.perf_counter()
        seconds = {"features": t1 - t0, "windows": t2 - t1 - infer_s, "inference": infer_s, "windows_count": float(total)}
        return frame, seconds, dict(feats.counts)


def _settings_key(run: Run, options: RunOptions, stride: int, backend: str) -> str:
    """Identifies a date's output: same key means a rerun may skip it."""
    checkpoint = hashlib.sha256(run.read_bytes(CHECKPOINT)).hexdigest()
    scalers = hashlib.sha256(run.read_bytes(SCALERS)).hexdigest()
    payload = json.dumps(
        {"checkpoint": checkpoint, "scalers": scalers, "stride": stride, "format": options.fmt, "backend": backend},
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
    progress: Callable[[Iterable[dt.date]], Iterable[dt.date]] = lambda dates: dates,
) -> InferenceSummary:
    """Predict every selected date of ``run_name`` and write one file per date (see module doc)."""
    options.check()
    started = time.perf_counter()
    run = Run.open(find_run(store, run_name, experiment=experiment, model_type=model_type))
    stride = options.stride(run)
    data_root = as_store(options.data_root or run.config.data_root)
    available = marketdata.list_dates(data_root)
    selection = parse_dates(options.dates, available)
    backend = open_backend(run, options.backend)
    predictor = DayPredictor(run, backend, stride=stride, batch_size=options.batch_size)
    settings = _settings_key(run, options, stride, backend.name)
    manifest = _load_manifest(run)
    manifest.update(
        run=run.ref.name,
        settings={"key": settings, "backend": backend.name, "stride": stride, "dense": options.dense,
                  "format": options.fmt, "data_root": data_root.uri()},
        versions=_versions(backend),
    )
    results = [DateResult(d.isoformat(), "no_data", reason=f"no data under {data_root.uri()}") for d in selection.missing]
    for result in results:
        if on_date:
            on_date(result)
    for day in progress(selection.dates):
        result = _run_date(run, predictor, data_root, day, options, settings, manifest)
        results.append(result)
        if result.status != "skipped":
            manifest["dates"][result.date] = dataclasses.asdict(result)
            run.write_text(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if on_date:
            on_date(result)
        if result.status == "failed" and options.fail_fast:
            break
    results.sort(key=lambda r: r.date)
    return InferenceSummary(run.ref.name, backend.name, stride, results, time.perf_counter() - started)


def _run_date(run: Run, predictor: DayPredictor, data_root: Store, day: dt.date, options: RunOptions,
              settings: str, manifest: dict) -> DateResult:
    key = output_key(day, options.fmt)
    previous = manifest["dates"].get(day.isoformat(), {})
    if (not options.overwrite and previous.get("status") == "ok" and previous.get("settings") == settings
            and run.exists(key)):
        return DateResult(day.isoformat(), "skipped", rows=previous.get("rows", 0), file=run.ref.store.uri(key),
                          settings=settings, reason="already done with the same model and settings")
    t0 = time.perf_counter()
    try:
        raw = marketdata.read_day(data_root, day)
        t1 = time.perf_counter()
        frame, seconds, counts = predictor.predict(raw, day, source=data_root.uri(marketdata.partition(day)))
        t2 = time.perf_counter()
        run.write_bytes(key, predictions.encode(frame, options.fmt))
        t3 = time.perf_counter()
    except (DataError, StoreError) as exc:
        log.warning("%s failed: %s", day, exc)
        return DateResult(day.isoformat(), "failed", reason=str(exc), settings=settings)
    except TthfError:
        raise
    n_windows = int(seconds.pop("windows_count"))
    seconds = {"read": t1 - t0, **seconds, "write": t3 - t2, "total": t3 - t0}
    return DateResult(day.isoformat(), "ok", rows=frame.height, windows=n_windows,
                      seconds={k: round(v, 4) for k, v in seconds.items()}, counts=counts,
                      file=run.ref.store.uri(key), settings=settings)

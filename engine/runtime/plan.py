"""What one ``tthf-run`` call computes: the opened run, data root and backend, and which dates to do.

``plan_inference`` sorts the selected dates into those to compute, those already done with
the same model and settings (``settings_key``: a rerun skips them, whichever executor did
them) and those without data, and prepares the manifest they are recorded in. ``--dates
new`` is resolved here, where the settings key is known: the completed sessions with data
that are not done, nothing else; ``latest`` and ``new`` warn when the data is stale.

The dates go to one prediction set (``--predictions NAME``: ``inference/NAME/``, default
``inference/``), and a set holds one precision: a call whose backend computes at another
precision than the files the set already holds is refused before any date is computed
(``MixedPrecisionError``, naming the set to write instead), so fp32 and bf16 or int8 files never
sit side by side in one set and a rerun never resumes another precision's files.

A worker process that computes the plan's dates on its own (a host worker of ``--host-mode
processes``, a Ray actor) gets the plan as a ``WorkerSpec``: plain values, the run and data
root as locators that it opens itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import polars as pl

import tthf
from tthf.engine import artifacts
from tthf.engine.data import marketdata
from tthf.engine.data.dates import LATEST, NEW, DateSelection, completed_dates, parse_dates
from tthf.engine.data.featurefiles import input_dates
from tthf.engine.data.freshness import check_freshness
from tthf.engine.inference_manifest import DateResult, InferenceSettings, RunManifest
from tthf.engine.runs import CHECKPOINT, SCALERS, Run, RunLocator, output_key, parse_output_key, predictions_dir
from tthf.engine.runtime.backends import REGISTRY, Backend, BackendSpec, open_backend
from tthf.engine.runtime.backends.tensorrt import Rebuild
from tthf.engine.runtime.options import RunOptions
from tthf.engine.store import Store, StoreLocator, open_store
from tthf.errors import MixedPrecisionError

__all__ = ["InferencePlan", "WorkerSpec", "check_one_precision", "plan_inference", "settings_key"]

log = logging.getLogger("tthf.run")


def settings_key(run: Run, options: RunOptions, stride: int, backend: BackendSpec, data_root: str) -> str:
    """Identifies a date's output: same key means a rerun may skip it.

    A reduced-precision variant (an optional backend: openvino-bf16, openvino-int8) adds its
    precision and the sha256 of the exported files it serves, so a re-export that changes them
    (int8 calibrated again) redoes the dates. The other backends' keys are what they were before
    (their name fixes their precision; their files follow the checkpoint), so an upgrade does not
    redo a run's dates. The prediction set is not in the key: each set has its own manifest.
    """
    fields: dict[str, object] = {
        "checkpoint": run.sha256(CHECKPOINT),
        "scalers": run.sha256(SCALERS),
        "stride": stride,
        "format": options.fmt,
        "backend": backend.name,
        "data_root": data_root,
    }
    if backend.optional:
        fields["precision"] = backend.precision
        fields["served"] = _served(run, backend)
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _served(run: Run, backend: BackendSpec) -> dict[str, str]:
    """sha256 of the exported files a variant serves: the file it needs and those built at its precision."""
    manifest = artifacts.Manifest.read(run)
    return {
        name: str(info["sha256"])
        for name, info in manifest.artifacts.items()
        if name == backend.needs.artifact or info.get("precision") == backend.precision
    }


def check_one_precision(run: Run, manifest: RunManifest | None, backend: BackendSpec, predictions: str) -> None:
    """Refuse to write ``backend``'s precision into a set whose existing files were computed at another one.

    The precision of a date is its manifest entry's (or, in a manifest written before it was
    recorded, its backend's); only ok dates whose file is still in the set count.
    """
    if manifest is None:
        return
    files = {
        parsed[0].isoformat()
        for key in run.store.list(predictions_dir(predictions))
        if (parsed := parse_output_key(key, predictions))
    }
    held: dict[str, list[str]] = {}
    for day, result in sorted(manifest.dates.items()):
        precision = result.precision or (REGISTRY[result.backend].precision if result.backend in REGISTRY else None)
        if result.status == "ok" and day in files and precision not in (None, backend.precision):
            held.setdefault(precision, []).append(day)
    if held:
        where = run.store.uri(predictions_dir(predictions))
        what = "; ".join(f"{p} for {len(days)} date(s) ({days[0]}..{days[-1]})" for p, days in held.items())
        raise MixedPrecisionError(
            f"prediction set {predictions!r} ({where}) holds predictions at {what}; --backend {backend.name} "
            f"computes at {backend.precision}, and a set never mixes precisions. Write them to their own set "
            f"with --predictions NAME (for example --predictions {backend.precision}), or delete {where} to "
            "replace the set"
        )


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


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to compute the plan's dates on its own; small and picklable.

    A host worker opens the run (its scalers, features and calendar) and the data root; a Ray
    actor also opens the backend the plan resolved, with ``threads`` inference threads (None:
    the backend's default) and ``rebuild`` for a TensorRT engine its GPU lacks.
    """

    run: RunLocator
    data: StoreLocator
    options: RunOptions
    backend: str
    stride: int
    settings: str
    rebuild: Rebuild | None = None
    threads: int | None = None


@dataclass
class InferencePlan:
    """An opened run with its backend, what to compute, and the manifest to record it in."""

    run: Run
    options: RunOptions
    stride: int
    data: Store
    backend: Backend
    settings: str
    manifest: RunManifest
    todo: list[dt.date]
    skipped: list[DateResult]
    missing: list[DateResult]
    opened: float = field(default_factory=time.perf_counter)
    rebuild: Rebuild | None = None  # what opened the backend (tthf.export.rebuild_engine), for the workers

    def worker_spec(self, *, threads: int | None = None) -> WorkerSpec:
        """The plan for a worker process (see ``WorkerSpec``)."""
        return WorkerSpec(
            self.run.ref.locator(),
            self.data.locator(),
            self.options,
            self.backend.name,
            self.stride,
            self.settings,
            self.rebuild,
            threads,
        )


def plan_inference(
    run: Run,
    options: RunOptions,
    *,
    rebuild: Rebuild | None = None,
    endpoint_url: str | None = None,
    opened: float | None = None,
) -> InferencePlan:
    """Open the run's data root and backend; sort the selected dates into todo, skipped and missing.

    ``rebuild`` builds a TensorRT engine the export lacks for this GPU (``tthf.export.rebuild_engine``);
    ``endpoint_url`` is the S3-compatible server of an ``s3://`` data root; ``opened`` is when the
    call began (``time.perf_counter()``, default now): the summary's seconds count from it.
    """
    opened = time.perf_counter() if opened is None else opened
    stride = options.stride(run)
    data = open_store(options.data_root or run.config.data_root, endpoint_url=endpoint_url)
    cfg = run.config
    available = input_dates(data, cfg.feature_files, computed=bool(cfg.computed_names))
    selection = _select(options, available, data.uri(), cfg.calendar)
    backend = open_backend(run, options.backend, rebuild=rebuild)
    settings = settings_key(run, options, stride, backend.spec, data.uri())
    previous = RunManifest.load(run, options.predictions)
    check_one_precision(run, previous, backend.spec, options.predictions)
    dates = dict(previous.dates) if previous else {}
    missing = [
        DateResult(day.isoformat(), "no_data", reason=f"no data under {data.uri(marketdata.partition(day))}")
        for day in selection.missing
    ]
    todo, skipped = [], []
    for day in selection.dates:
        done = _already_done(run, dates.get(day.isoformat()), day, options, settings)
        if not done:
            todo.append(day)
        elif selection.spec != NEW:  # new: the dates done are not part of the call
            skipped.append(done)
    if selection.spec == NEW:
        log.info("--dates %s: %s", NEW, ", ".join(str(d) for d in todo) or "nothing new")
    local = options.executor == "local"
    recorded = InferenceSettings(
        settings,
        backend.name,
        stride,
        options.dense,
        options.fmt,
        data.uri(),
        options.executor,
        host_workers=options.host_workers_for(len(todo)) if local else None,
        host_mode=options.host_mode if local else None,
        predictions=options.predictions,
        precision=backend.precision,
    )
    manifest = RunManifest(run.ref.name, recorded, _versions(backend), dates)
    return InferencePlan(
        run, options, stride, data, backend, settings, manifest, todo, skipped, missing, opened, rebuild
    )


def _select(options: RunOptions, available: list[dt.date], source: str, calendar: str) -> DateSelection:
    """The selected dates; ``latest`` and ``new`` also warn when the data is stale (tthf.engine.data.freshness).

    ``new``'s candidates are every completed session with data; ``plan_inference`` keeps those not done.
    """
    spec = options.dates.strip()
    if spec not in (LATEST, NEW):
        return parse_dates(options.dates, available, source=source, calendar=calendar)
    fresh = check_freshness(
        available, source=source, as_of=options.as_of, calendar=calendar, max_missing=options.max_missing
    )
    if fresh.stale:
        log.warning("%s", fresh.message())
    if spec == LATEST:
        return parse_dates(spec, available, source=source, calendar=calendar)
    return DateSelection(NEW, completed_dates(available, fresh.as_of, calendar), [])


def _already_done(
    run: Run, previous: DateResult | None, day: dt.date, options: RunOptions, settings: str
) -> DateResult | None:
    key = output_key(day, options.fmt, options.predictions)
    if (
        options.overwrite
        or previous is None
        or previous.status != "ok"
        or previous.settings != settings
        or not run.exists(key)
    ):
        return None
    return DateResult(
        day.isoformat(),
        "skipped",
        rows=previous.rows,
        windows=previous.windows,
        file=run.store.uri(key),
        settings=settings,
        backend=previous.backend,
        executor=previous.executor,
        worker=previous.worker,
        precision=previous.precision,
        reason="already done with the same model and settings",
    )

"""``inference/manifest.json``: each predicted date's outcome and the settings of the latest call, typed.

Each prediction set has its own manifest (``inference/manifest.json`` for the default set,
``inference/NAME/manifest.json`` for ``--predictions NAME``: ``tthf.engine.runs.inference_manifest_key``).
tthf-run rewrites it (atomically) after every date, so a killed run loses at most the dates in
flight; a rerun skips the dates whose entry is ``ok`` with the same settings key and whose file
exists. Every executor's dates reach it through the runtime's ``Recorder``; tthf-eval reads the
latest format from it. No other module parses the file.

Loading is strict, like ``config.json``: a key that is unknown, missing or of the wrong type is
a ``RunFormatError`` that names the file, the key and the fix. ``RunManifest.load`` treats such a
manifest (written by an older tthf, or edited by hand) as it treats one that is not JSON: it
logs the error and returns None, so tthf-run starts a new manifest and redoes the dates, and
tthf-eval takes CSV files first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tthf.engine.predictions import FORMATS
from tthf.engine.runs import DEFAULT_PREDICTIONS, INFERENCE_MANIFEST, Run, inference_manifest_key
from tthf.errors import KeyNotFoundError, RunFormatError

log = logging.getLogger("tthf.run")

STATUSES = ("ok", "failed", "skipped", "no_data")
#: what happens to a manifest that does not load, and why a key can be wrong
_REDO = "tthf-run replaces it and redoes its dates"
_FIX = f"the manifest was written by another tthf version or edited by hand; {_REDO}"

T = TypeVar("T")


@dataclass
class DateResult:
    """The outcome of one date, as written to the run manifest."""

    date: str
    status: str  # one of STATUSES: "skipped" is already done, "no_data" has no partition
    rows: int = 0
    windows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    file: str = ""
    settings: str = ""  # the settings key (InferenceSettings.key) the date was computed with
    backend: str = ""
    windowing: str = ""  # "host" or "device": where the windows were cut
    executor: str = ""  # "local" or "ray" (tthf.engine.runtime.options.EXECUTORS)
    worker: str = ""  # the process that computed the date: host (local) or host:pid (a Ray actor)
    precision: str | None = None  # the backend's arithmetic (BackendSpec.precision); None: written before it was

    def __post_init__(self) -> None:
        _check_types(self)
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")


@dataclass(frozen=True)
class RaySettings:
    """The worker pool of ``--executor ray`` (recorded, not in the settings key)."""

    address: str  # "local": a cluster started for the call
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    threads: int | None  # inference threads per CPU worker; None: GPU workers
    retries: int

    def __post_init__(self) -> None:
        _check_types(self)


@dataclass(frozen=True)
class InferenceSettings:
    """What the latest tthf-run call resolved; only ``key`` decides whether a rerun may skip a date.

    ``key`` is the hash of what determines a date's file (checkpoint, scalers, stride, format,
    backend and its precision, the served variant's files, data root:
    ``tthf.engine.runtime.plan.settings_key``). The fields that default to None are written only
    when set: ``host_workers`` and ``host_mode`` by ``--executor local``, ``ray`` by ``--executor
    ray`` once its workers are sized; ``predictions`` (the set's name) and ``precision`` (the
    set's one precision) by every tthf since prediction sets, absent from older manifests.
    """

    key: str
    backend: str
    stride: int
    dense: bool
    format: str
    data_root: str
    executor: str
    host_workers: int | None = None
    host_mode: str | None = None
    ray: RaySettings | None = None
    predictions: str | None = None  # the prediction set (tthf.engine.runs.DEFAULT_PREDICTIONS: inference/)
    precision: str | None = None  # the backend's arithmetic: every ok date of a set has this one

    def __post_init__(self) -> None:
        _check_types(self)
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if (self.host_workers is None) != (self.host_mode is None):
            raise ValueError("host_workers and host_mode go together")
        if self.host_workers is not None and self.host_workers < 1:
            raise ValueError(f"host_workers must be >= 1, got {self.host_workers}")


@dataclass
class RunManifest:
    """The run, the settings of the latest call, library versions, and one entry per date."""

    run: str
    settings: InferenceSettings
    versions: dict[str, str]
    dates: dict[str, DateResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_types(self)

    @property
    def predictions(self) -> str:
        """The prediction set this manifest describes."""
        return self.settings.predictions or DEFAULT_PREDICTIONS

    def done(self, key: str) -> dict[str, DateResult]:
        """The dates predicted successfully with settings ``key`` (their files' existence is the caller's check)."""
        return {day: r for day, r in self.dates.items() if r.status == "ok" and r.settings == key}

    @classmethod
    def load(cls, run: Run, predictions: str = DEFAULT_PREDICTIONS) -> RunManifest | None:
        """The manifest of the run's prediction set ``predictions``; None when it has none or it does not
        load (logged: its dates are redone)."""
        key = inference_manifest_key(predictions)
        try:
            return cls.from_json(run.read_text(key), source=run.store.uri(key))
        except KeyNotFoundError:
            return None
        except RunFormatError as exc:
            log.warning("%s", exc)
            return None

    @classmethod
    def from_json(cls, text: str, source: str = INFERENCE_MANIFEST) -> RunManifest:
        """Strictly parse the manifest's text; ``source`` names the file in errors."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunFormatError(f"{source} is not valid JSON ({exc}); {_REDO}") from exc
        top = _from_dict(_Top, raw, source, "the manifest")
        settings = _from_dict(InferenceSettings, top.settings, source, "settings", nested={"ray": RaySettings})
        dates = {day: _from_dict(DateResult, entry, source, f"the entry of {day}") for day, entry in top.dates.items()}
        for day, entry in dates.items():
            if entry.date != day:
                raise RunFormatError(f"{source}: the entry of {day} says date {entry.date!r}; {_FIX}")
        return cls(top.run, settings, top.versions, dates)

    def record(self, result: DateResult) -> None:
        self.dates[result.date] = result

    def to_json(self) -> str:
        doc = {
            "run": self.run,
            "settings": _to_dict(self.settings),
            "versions": self.versions,
            "dates": {day: _to_dict(r) for day, r in self.dates.items()},
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    def write(self, run: Run) -> None:
        run.write_text(inference_manifest_key(self.predictions), self.to_json())


@dataclass(frozen=True)
class _Top:
    """The manifest's top level as it is in the file, before its parts are parsed."""

    run: str
    settings: dict[str, Any]
    versions: dict[str, str]
    dates: dict[str, Any]

    def __post_init__(self) -> None:
        _check_types(self)


def _to_dict(obj: Any) -> dict[str, Any]:
    """A manifest object as JSON values; a field that defaults to None is left out while it is None."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.default is None:
            continue
        out[f.name] = _to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def _from_dict(cls: type[T], raw: Any, source: str, where: str, nested: dict[str, type] | None = None) -> T:
    """``cls`` from its JSON object, naming any unknown, missing or mistyped key (``where`` in ``source``).

    Every key is required but those of the fields that default to None (``_to_dict`` leaves them out).
    """
    if not isinstance(raw, dict):
        raise RunFormatError(f"{source}: {where} is {type(raw).__name__}, expected an object; {_FIX}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise RunFormatError(f"{source}: unknown key(s) {unknown} in {where}; {_FIX}")
    missing = [name for name, f in fields.items() if name not in raw and f.default is not None]
    if missing:
        raise RunFormatError(f"{source}: missing key(s) {missing} in {where}; {_FIX}")
    kwargs = dict(raw)
    for key, sub in (nested or {}).items():
        if kwargs.get(key) is not None:
            kwargs[key] = _from_dict(sub, kwargs[key], source, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise RunFormatError(f"{source}: {where}: {exc}; {_FIX}") from exc


def _check_types(obj: Any) -> None:
    """Every field of ``obj`` holds what its annotation says (JSON's types: ints are not bools)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not _is_a(value, hints[f.name]):
            raise ValueError(f"{f.name} must be {_name(hints[f.name])}, got {value!r}")


def _is_a(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType:
        return any(_is_a(value, arg) for arg in args)
    if origin is dict:
        return isinstance(value, dict) and all(_is_a(k, args[0]) and _is_a(v, args[1]) for k, v in value.items())
    if hint is Any:
        return True
    if hint in (int, float):  # a float field holds what json.loads gives for 2 or 2.0
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)

"""The import spec (``SPEC.toml``): what ``tthf-import`` brings in and how, parsed strictly.

The sections and keys are the contract of design.md, "Importing a run"; docs/import.md
documents each. Paths are relative to the spec's folder, absolute, or ``s3://``. An
unknown key, a missing one or a value of the wrong kind is a ``ModelImportError`` that
names the section and key. ``[features.columns]`` makes the user's feature files a source of
the names not listed in ``features.computed``; ``[labels]`` reads realized values from them;
``[golden]`` names the user's own predictions, which the import reproduces.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from tthf.engine.config import DEFAULT_CALENDAR, FILLS, OUTPUT_NAMES, SEQ_LEN, FeatureFiles
from tthf.engine.data.featurefiles import check_template
from tthf.engine.features import FEATURE_NAMES
from tthf.errors import DataError, ModelImportError

MODEL_FORMATS = {
    ".onnx": "onnx",
    ".pt2": "pt2",
    ".safetensors": "state_dict",
    ".pt": "state_dict",
    ".pth": "state_dict",
}
SCALER_FORMATS = {".json": "json", ".skops": "skops", ".joblib": "pickle", ".pkl": "pickle", ".pickle": "pickle"}
CONFIDENCE_KINDS = ("band", "score")
#: the space each confidence's band is stated in, as tthf's evaluation scores it (docs/model.md)
BAND_SPACES = {"ret_conf": "linear", "vol_conf": "log"}
GOLDEN_MODES = ("dense", "sparse")
#: the outputs whose realized values ``[labels]`` may give
LABELS = ("ret_1h", "vol_10m")


@dataclass(frozen=True)
class Golden:
    """``[golden]``: the user's predictions per date (``path`` with ``{date}``), to reproduce at import."""

    path: str
    dates: tuple[str, ...]
    columns: dict[str, str]  # tthf output -> the file's column
    mode: str = "dense"
    symbol: str = "symbol"
    ts: str = "ts"


@dataclass(frozen=True)
class OutputMap:
    """One tthf output: model output ``output``, its column ``column`` (None for a (B,) output), then
    ``value * scale + offset``, or an sklearn scaler's inverse (``scaler``, ``index``) once resolved."""

    output: str
    column: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    scaler: str | None = None
    index: int = 0


@dataclass(frozen=True)
class Confidence:
    """``score``: a ranking only; ``band``: P(|realized - forecast| <= band) in ``space``."""

    kind: str
    band: float = 0.0
    space: str = ""


@dataclass(frozen=True)
class ImportSpec:
    source: str  # the spec file, for messages
    experiment: str
    model_type: str
    run_id: str
    model_path: str
    model_format: str
    feature_names: tuple[str, ...]
    scalers_path: str
    scalers_format: str
    outputs: dict[str, OutputMap]
    confidence: dict[str, Confidence]
    model_class: str | None = None
    code_path: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    state_dict_key: str | None = None
    seq_len: int = SEQ_LEN
    sample_every: int = 10
    scalers_key: str | None = None
    raw_root: str | None = None
    train_dates: str | None = None
    heldout_dates: str | None = None
    calendar: str = DEFAULT_CALENDAR
    feature_files: FeatureFiles | None = None  # [features.columns] with fill and [labels]
    golden: Golden | None = None
    groups: dict[str, str] = field(default_factory=dict)  # features.groups: feature name -> family, for explanations

    @property
    def computed(self) -> list[str]:
        """The names tthf computes from raw bars (the others come from the feature files)."""
        files = set(self.feature_files.columns) if self.feature_files else set()
        return [n for n in self.feature_names if n not in files]


def load_spec(path: str | os.PathLike[str]) -> ImportSpec:
    """Read and check ``SPEC.toml`` (a local file)."""
    where = os.fspath(path)
    try:
        doc = tomllib.loads(Path(where).read_text())
    except FileNotFoundError as exc:
        raise ModelImportError(f"{where}: no such spec file; write one as docs/import.md shows") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelImportError(f"{where}: not valid TOML ({exc})") from exc
    return parse_spec(doc, where, Path(where).resolve().parent)


def parse_spec(doc: dict[str, Any], where: str, base: Path) -> ImportSpec:
    """The spec from a parsed TOML document; relative paths are taken from ``base``."""
    _keys(
        doc, where, "", {"run", "model", "outputs", "features", "scalers"}, {"confidence", "data", "labels", "golden"}
    )
    run = _section(doc, where, "run", {"experiment", "model_type", "run_id"}, set())
    model = _section(
        doc, where, "model", {"path"}, {"class", "code_path", "kwargs", "state_dict_key", "seq_len", "sample_every"}
    )
    features = _section(doc, where, "features", {"names"}, {"computed", "fill", "groups", "columns"})
    scalers = _section(doc, where, "scalers", {"path"}, {"key"})
    data = _section(doc, where, "data", set(), {"raw_root", "train_dates", "heldout_dates", "calendar"})
    model_path = resolve(_str(model, where, "model.path"), base)
    model_format = _format(model_path, MODEL_FORMATS, where, "model.path")
    model_class = _opt_str(model, where, "model.class")
    if model_format == "state_dict" and not model_class:
        raise ModelImportError(
            f"{where}: model.path {model_path} is a state dict; name the class that holds it: "
            'class = "module:Class" (and code_path, kwargs)'
        )
    if model_format != "state_dict" and model_class:
        raise ModelImportError(f"{where}: model.class is only for state dicts; a {model_format} model needs no code")
    code_path = _opt_str(model, where, "model.code_path")
    names = _names(features, where)
    files = _feature_files(features, doc.get("labels"), names, where, base)
    if files is None and "golden" in doc:
        raise ModelImportError(f"{where}: [golden] needs [features.columns] (the user's predictions of their files)")
    return ImportSpec(
        source=where,
        experiment=_str(run, where, "run.experiment"),
        model_type=_str(run, where, "run.model_type"),
        run_id=_str(run, where, "run.run_id"),
        model_path=model_path,
        model_format=model_format,
        model_class=model_class,
        code_path=resolve(code_path, base) if code_path else None,
        kwargs=_table(model, where, "model.kwargs"),
        state_dict_key=_opt_str(model, where, "model.state_dict_key"),
        seq_len=_int(model, where, "model.seq_len", SEQ_LEN),
        sample_every=_int(model, where, "model.sample_every", 10),
        feature_names=names,
        scalers_path=(scalers_path := resolve(_str(scalers, where, "scalers.path"), base)),
        scalers_format=_format(scalers_path, SCALER_FORMATS, where, "scalers.path"),
        scalers_key=_opt_str(scalers, where, "scalers.key"),
        outputs=_outputs(doc["outputs"], where),
        confidence=_confidence(doc.get("confidence", {}), where),
        raw_root=resolve(r, base) if (r := _opt_str(data, where, "data.raw_root")) else None,
        train_dates=_opt_str(data, where, "data.train_dates"),
        heldout_dates=_opt_str(data, where, "data.heldout_dates"),
        calendar=_opt_str(data, where, "data.calendar") or DEFAULT_CALENDAR,
        feature_files=files,
        golden=_golden(doc["golden"], where, base) if "golden" in doc else None,
        groups=_groups(features.get("groups", {}), names, where),
    )


def resolve(path: str, base: Path) -> str:
    """A spec path as a URI: ``s3://`` and absolute paths as they are, others from the spec's folder."""
    if path.startswith("s3://") or os.path.isabs(path):
        return path
    return str(base / path)


def _names(features: dict[str, Any], where: str) -> tuple[str, ...]:
    names = features["names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelImportError(f"{where}: features.names must be a non-empty list of feature names")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ModelImportError(f"{where}: features.names lists {dup} more than once")
    computed = features.get("computed", [] if "columns" in features else names)
    if not isinstance(computed, list) or not all(isinstance(n, str) for n in computed):
        raise ModelImportError(f"{where}: features.computed must be a list of feature names")
    stray = [n for n in computed if n not in names]
    if stray:
        raise ModelImportError(f"{where}: features.computed {stray} are not in features.names; list them there too")
    unknown = [n for n in computed if n not in FEATURE_NAMES]
    if unknown:
        raise ModelImportError(
            f"{where}: features.computed {unknown} are not features tthf computes; docs/features.md lists the 59 "
            "names (read the others from feature files: [features.columns])"
        )
    if "columns" not in features and len(computed) != len(names):
        rest = [n for n in names if n not in computed]
        raise ModelImportError(
            f"{where}: features.names {rest} are neither computed by tthf nor read from files; add "
            "[features.columns] (the feature files) or list them in features.computed"
        )
    return tuple(names)


def _groups(raw: Any, names: tuple[str, ...], where: str) -> dict[str, str]:
    """``features.groups``: feature name -> family name, every key one of ``features.names`` (a name that is
    not is refused: a typo would silently leave the feature in the wrong family)."""
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v for v in raw.values()):
        raise ModelImportError(
            f'{where}: features.groups must map feature names to family names, e.g. {{ ret_1 = "returns" }}'
        )
    unknown = [n for n in raw if n not in names]
    if unknown:
        raise ModelImportError(
            f"{where}: features.groups names {unknown}, which are not in features.names; fix the names or drop them "
            "from features.groups"
        )
    return {n: raw[n] for n in names if n in raw}


def computed_names(features: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """The names tthf computes: ``features.computed``, by default all of them unless feature files are the source."""
    return list(features.get("computed", [] if "columns" in features else names))


def _feature_files(
    features: dict[str, Any], labels: Any, names: tuple[str, ...], where: str, base: Path
) -> FeatureFiles | None:
    """``[features.columns]``, ``fill`` and ``[labels]`` as the run's ``FeatureFiles`` (None without columns)."""
    fill = features.get("fill", "ffill_then_zero")
    if fill not in FILLS:
        raise ModelImportError(f"{where}: features.fill {fill!r}; use one of {FILLS}")
    if "columns" not in features:
        if labels is not None:
            raise ModelImportError(f"{where}: [labels] are columns of the feature files: add [features.columns]")
        return None
    cols = _section(features, where, "columns", {"root"}, {"path", "symbol", "ts", "timezone"}, "features.columns")
    computed = set(computed_names(features, names))
    timezone = _opt_str(cols, where, "features.columns.timezone") or "UTC"
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ModelImportError(
            f"{where}: features.columns.timezone {timezone!r} is not a time zone; use an IANA name such as "
            '"UTC" or "America/New_York"'
        ) from exc
    path = _opt_str(cols, where, "features.columns.path") or "{date}.parquet"
    try:
        check_template(path)
    except DataError as exc:
        raise ModelImportError(f"{where}: {exc}") from exc
    return FeatureFiles(
        root=resolve(_str(cols, where, "features.columns.root"), base),
        columns=[n for n in names if n not in computed],
        path=path,
        symbol=_opt_str(cols, where, "features.columns.symbol") or "symbol",
        ts=_opt_str(cols, where, "features.columns.ts") or "ts",
        timezone=timezone,
        fill=fill,
        labels=_labels(labels, where),
    )


def _labels(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ModelImportError(f"{where}: [labels] must be a table")
    _keys(raw, where, "labels", set(), set(LABELS))
    return {name: _str(raw, where, f"labels.{name}") for name in LABELS if name in raw}


def _golden(raw: Any, where: str, base: Path) -> Golden:
    item = _section({"golden": raw}, where, "golden", {"path", "dates", "columns"}, {"mode", "symbol", "ts"})
    path = _str(item, where, "golden.path")
    if "{date}" not in path:
        raise ModelImportError(f'{where}: golden.path {path!r} needs {{date}}, e.g. "inference/{{date}}.csv"')
    dates = item["dates"]
    if not isinstance(dates, list) or not dates or not all(isinstance(d, str) for d in dates):
        raise ModelImportError(f'{where}: golden.dates must be a non-empty list of dates, e.g. ["2024-03-06"]')
    for text in dates:
        try:
            dt.date.fromisoformat(text)
        except ValueError as exc:
            raise ModelImportError(f"{where}: golden.dates {text!r} is not a date (YYYY-MM-DD)") from exc
    columns = item["columns"]
    if not isinstance(columns, dict) or not columns:
        raise ModelImportError(f"{where}: golden.columns must map tthf outputs to the file's columns")
    _keys(columns, where, "golden.columns", set(), set(OUTPUT_NAMES))
    mode = item.get("mode", "dense")
    if mode not in GOLDEN_MODES:
        raise ModelImportError(f"{where}: golden.mode {mode!r}; use one of {GOLDEN_MODES}")
    return Golden(
        path=resolve(path, base),
        dates=tuple(dates),
        columns={name: _str(columns, where, f"golden.columns.{name}") for name in OUTPUT_NAMES if name in columns},
        mode=mode,
        symbol=_opt_str(item, where, "golden.symbol") or "symbol",
        ts=_opt_str(item, where, "golden.ts") or "ts",
    )


def _outputs(raw: Any, where: str) -> dict[str, OutputMap]:
    if not isinstance(raw, dict):
        raise ModelImportError(f"{where}: [outputs] must be a table")
    _keys(raw, where, "outputs", set(OUTPUT_NAMES), set())
    out = {}
    for name in OUTPUT_NAMES:
        item = _section(
            raw, where, name, {"output"}, {"column", "scale", "offset", "scaler", "index"}, f"outputs.{name}"
        )
        if "scaler" in item and ({"scale", "offset"} & set(item)):
            raise ModelImportError(f"{where}: outputs.{name}: give scale/offset or scaler/index, not both")
        column = item.get("column")
        if column is not None and (not isinstance(column, int) or isinstance(column, bool) or column < 0):
            raise ModelImportError(f"{where}: outputs.{name}.column must be a whole number >= 0, got {column!r}")
        out[name] = OutputMap(
            output=_str(item, where, f"outputs.{name}.output"),
            column=column,
            scale=_float(item, where, f"outputs.{name}.scale", 1.0),
            offset=_float(item, where, f"outputs.{name}.offset", 0.0),
            scaler=_opt_str(item, where, f"outputs.{name}.scaler"),
            index=_int(item, where, f"outputs.{name}.index", 0, low=0),
        )
    return out


def _confidence(raw: Any, where: str) -> dict[str, Confidence]:
    if not isinstance(raw, dict):
        raise ModelImportError(f"{where}: [confidence] must be a table")
    _keys(raw, where, "confidence", set(), set(BAND_SPACES))
    out = {}
    for name, space in BAND_SPACES.items():
        item = _section(raw, where, name, set(), {"kind", "band", "space"}, f"confidence.{name}") if name in raw else {}
        kind = item.get("kind", "score")
        if kind not in CONFIDENCE_KINDS:
            raise ModelImportError(f"{where}: confidence.{name}.kind {kind!r}; use one of {CONFIDENCE_KINDS}")
        if kind == "score":
            out[name] = Confidence("score")
            continue
        band = _float(item, where, f"confidence.{name}.band", 0.0)
        if band <= 0:
            raise ModelImportError(f"{where}: confidence.{name} is a band: give band = a positive number")
        if item.get("space", space) != space:
            raise ModelImportError(
                f"{where}: confidence.{name}.space {item['space']!r}: tthf scores {name}'s band in {space!r} space "
                f'(docs/model.md); convert the band or declare kind = "score"'
            )
        out[name] = Confidence("band", band, space)
    return out


def _keys(doc: dict[str, Any], where: str, section: str, required: set[str], optional: set[str]) -> None:
    at = f"[{section}] " if section else ""
    unknown = sorted(set(doc) - required - optional)
    if unknown:
        raise ModelImportError(f"{where}: {at}unknown key(s) {unknown}; docs/import.md lists the spec's keys")
    missing = sorted(required - set(doc))
    if missing:
        raise ModelImportError(f"{where}: {at}missing key(s) {missing}; docs/import.md lists the spec's keys")


def _section(
    doc: dict[str, Any], where: str, name: str, required: set[str], optional: set[str], label: str = ""
) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ModelImportError(f"{where}: {label or name} must be a table")
    _keys(value, where, label or name, required, optional)
    return value


def _format(path: str, formats: dict[str, str], where: str, key: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in formats:
        raise ModelImportError(f"{where}: {key} {path}: unknown extension {ext!r}; use one of {sorted(formats)}")
    return formats[ext]


def _str(doc: dict[str, Any], where: str, key: str) -> str:
    value = doc[key.rsplit(".", 1)[-1]]
    if not isinstance(value, str) or not value:
        raise ModelImportError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def _opt_str(doc: dict[str, Any], where: str, key: str) -> str | None:
    return _str(doc, where, key) if key.rsplit(".", 1)[-1] in doc else None


def _int(doc: dict[str, Any], where: str, key: str, default: int, low: int = 1) -> int:
    value = doc.get(key.rsplit(".", 1)[-1], default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ModelImportError(f"{where}: {key} must be a whole number >= {low}, got {value!r}")
    return value


def _float(doc: dict[str, Any], where: str, key: str, default: float) -> float:
    value = doc.get(key.rsplit(".", 1)[-1], default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ModelImportError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def _table(doc: dict[str, Any], where: str, key: str) -> dict[str, Any]:
    value = doc.get(key.rsplit(".", 1)[-1], {})
    if not isinstance(value, dict):
        raise ModelImportError(f"{where}: {key} must be a table of keyword arguments")
    return dict(value)

"""The user's scalers -> plain numbers, once: the feature scaler as ``Scalers``, target scalers as affine maps.

Three formats (docs/import.md, "Scalers"):

- JSON: one scaler object ``{"names": [...], "center": [...], "scale": [...], "clip": c}``
  (``names`` and ``clip`` optional; ``clip`` one number, a list of equal numbers or null),
  or an object of named scaler objects;
- skops (``.skops``): the file's types are audited with ``skops.io.get_untrusted_types``
  before anything is loaded, and every object used must be a known sklearn scaler;
- joblib / pickle: unpickling runs code from the file, so only with ``--trust-pickle``.

A scaler is ``(x - center) / scale``; its inverse ``value * scale + center`` (for
StandardScaler ``value * scale_[i] + mean_[i]``). ``MinMaxScaler`` is the same with
``center = -min_ / scale_`` and ``scale = 1 / scale_``. The run keeps the numbers only.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tthf.engine.features.scalers import Scalers
from tthf.errors import ModelImportError
from tthf.export.importing.sources import read_uri
from tthf.export.importing.spec import ImportSpec, OutputMap

#: the sklearn classes tthf converts (module path as skops and pickle name them)
KNOWN_SCALERS = (
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.RobustScaler",
    "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.preprocessing._data.MaxAbsScaler",
)
_PICKLE_FIX = (
    "unpickling runs code from the file: pass --trust-pickle if you trust where it came from, or save the "
    "scalers with skops.io.dump (audited, no code runs) or as JSON (docs/import.md, 'Scalers')"
)


@dataclass(frozen=True)
class Affine:
    """``(x - center) / scale`` per column; ``names``: the columns' names when the scaler knows them."""

    center: np.ndarray
    scale: np.ndarray
    names: tuple[str, ...] | None = None
    clip: float = math.inf
    count: int = 1


def load_scalers(spec: ImportSpec, *, trust_pickle: bool) -> tuple[Scalers, dict[str, OutputMap], list[str]]:
    """The run's ``Scalers`` (``features.names`` order), the outputs with scaler inverses resolved to numbers,
    and the scaler names used (for the import record)."""
    where = spec.scalers_path
    doc = _read(spec, trust_pickle=trust_pickle)
    feature = _pick(doc, spec.scalers_key, where, "the feature scaler (scalers.key)")
    scalers = feature_scalers(feature, spec.feature_names, where)
    outputs, used = {}, [spec.scalers_key or "(the file)"]
    for name, out in spec.outputs.items():
        if out.scaler is None:
            outputs[name] = out
            continue
        target = _pick(doc, out.scaler, where, f"outputs.{name}.scaler")
        if out.index >= len(target.scale):
            raise ModelImportError(
                f"{where}: outputs.{name}: scaler {out.scaler!r} has {len(target.scale)} column(s), index {out.index}"
            )
        outputs[name] = replace(out, scale=float(target.scale[out.index]), offset=float(target.center[out.index]))
        used.append(out.scaler)
    return scalers, outputs, used


def feature_scalers(affine: Affine, names: Sequence[str], where: str) -> Scalers:
    """``affine`` as ``Scalers`` in ``names`` order: matched by name when the scaler carries names."""
    center, scale = affine.center, affine.scale
    if affine.names is not None:
        if sorted(affine.names) != sorted(names):
            missing = [n for n in names if n not in affine.names]
            extra = [n for n in affine.names if n not in names]
            raise ModelImportError(
                f"{where}: the feature scaler's names do not match features.names (missing {missing}, extra {extra}); "
                "list the model's features in the spec exactly as the scaler was fitted on them"
            )
        order = [affine.names.index(n) for n in names]
        center, scale = center[order], scale[order]
    elif len(center) != len(names):
        raise ModelImportError(
            f"{where}: the feature scaler has {len(center)} columns but features.names lists {len(names)}; "
            "its columns must follow features.names"
        )
    if not (np.isfinite(center).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise ModelImportError(f"{where}: the feature scaler needs finite centers and positive finite scales")
    return Scalers(names=tuple(names), mean=center, std=scale, count=affine.count, clip=affine.clip)


def _read(spec: ImportSpec, *, trust_pickle: bool) -> Any:
    """The file's content: one ``Affine`` or a dict of them (other entries left as they are)."""
    data, where = read_uri(spec.scalers_path), spec.scalers_path
    if spec.scalers_format == "json":
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelImportError(f"{where}: not valid JSON ({exc})") from exc
        if isinstance(doc, dict) and "center" in doc:
            return _from_json(doc, where)
        if isinstance(doc, dict):
            return {k: _from_json(v, f"{where} [{k}]") if isinstance(v, dict) else v for k, v in doc.items()}
        raise ModelImportError(f"{where}: expected a scaler object or an object of named scalers")
    if spec.scalers_format == "skops":
        obj = _load_skops(data, where)
    elif not trust_pickle:
        raise ModelImportError(f"{where}: {_PICKLE_FIX}")
    else:
        import joblib

        obj = joblib.load(io.BytesIO(data))
    if isinstance(obj, dict):
        return {k: _from_sklearn(v, f"{where} [{k}]") if _is_sklearn(v) else v for k, v in obj.items()}
    return _from_sklearn(obj, where)


def _load_skops(data: bytes, where: str) -> Any:
    """Audit first: any type outside skops' default trusted set is refused before loading."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=data)
    if untrusted:
        raise ModelImportError(
            f"{where}: the skops file holds types tthf does not load: {untrusted}; save only sklearn scalers "
            f"({', '.join(c.rsplit('.', 1)[1] for c in KNOWN_SCALERS)}) or a dict of them"
        )
    return sio.loads(data, trusted=[])


def _is_sklearn(obj: Any) -> bool:
    return type(obj).__module__.startswith("sklearn.")


def _from_sklearn(obj: Any, where: str) -> Affine:
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if kind not in KNOWN_SCALERS:
        raise ModelImportError(
            f"{where}: {type(obj).__name__} is not a scaler tthf converts; use one of "
            f"{', '.join(c.rsplit('.', 1)[1] for c in KNOWN_SCALERS)}"
        )
    name = type(obj).__name__
    names = tuple(str(n) for n in obj.feature_names_in_) if hasattr(obj, "feature_names_in_") else None
    count = int(np.max(getattr(obj, "n_samples_seen_", 1)))
    if name == "MinMaxScaler":
        if obj.clip:
            raise ModelImportError(f"{where}: MinMaxScaler(clip=True) clips to its range, which tthf cannot serve")
        scale = 1.0 / np.asarray(obj.scale_, dtype=np.float64)
        return Affine(-np.asarray(obj.min_, dtype=np.float64) * scale, scale, names, count=count)
    width = len(obj.scale_) if getattr(obj, "scale_", None) is not None else len(obj.center_)
    scale = np.asarray(obj.scale_, dtype=np.float64) if getattr(obj, "scale_", None) is not None else np.ones(width)
    center = getattr(obj, "mean_", None) if name == "StandardScaler" else getattr(obj, "center_", None)
    center = np.asarray(center, dtype=np.float64) if center is not None else np.zeros(width)
    return Affine(center, scale, names, count=max(count, 1))


def _from_json(doc: dict[str, Any], where: str) -> Affine:
    unknown = sorted(set(doc) - {"names", "center", "scale", "clip"})
    if unknown or "center" not in doc or "scale" not in doc:
        raise ModelImportError(
            f"{where}: a JSON scaler has keys center, scale and optionally names, clip; got {sorted(doc)}"
        )
    try:
        center = np.asarray(doc["center"], dtype=np.float64)
        scale = np.asarray(doc["scale"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelImportError(f"{where}: center and scale must be lists of numbers ({exc})") from exc
    if center.ndim != 1 or center.shape != scale.shape:
        raise ModelImportError(f"{where}: center and scale must be lists of the same length")
    names = doc.get("names")
    if names is not None and (not isinstance(names, list) or len(names) != len(center)):
        raise ModelImportError(f"{where}: names must list one name per column ({len(center)})")
    return Affine(center, scale, tuple(names) if names is not None else None, clip=_clip(doc.get("clip"), where))


def _clip(raw: Any, where: str) -> float:
    """One clip for every feature (the features kernel clips with one bound), or inf."""
    if raw is None:
        return math.inf
    values = set(raw) if isinstance(raw, list) else {raw}
    if len(values) != 1 or not all(isinstance(v, (int, float)) and v > 0 for v in values):
        raise ModelImportError(
            f"{where}: clip must be one positive number (or a list of equal ones, or null); per-feature clips "
            "that differ are not supported"
        )
    return float(values.pop())


def _pick(doc: Any, key: str | None, where: str, what: str) -> Affine:
    """One scaler of the file: the whole file, or its entry ``key``."""
    if key is None:
        if isinstance(doc, Affine):
            return doc
        raise ModelImportError(f"{where} holds several entries {sorted(doc)}; name {what} with its key")
    if not isinstance(doc, dict) or key not in doc:
        have = sorted(doc) if isinstance(doc, dict) else "one scaler, not a dict"
        raise ModelImportError(f"{where}: no entry {key!r} for {what}; the file holds {have}")
    if not isinstance(doc[key], Affine):
        raise ModelImportError(f"{where}: entry {key!r} ({type(doc[key]).__name__}) is not a scaler")
    return doc[key]

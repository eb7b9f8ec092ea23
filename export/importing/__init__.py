"""``import_run``: a model trained elsewhere -> a tthf run that export, run, eval and real time serve unchanged.

The steps (docs/import.md): read the spec; convert the scalers once to plain numbers (the
feature scaler becomes ``scalers.json``, target scalers become the outputs' affine maps);
open the model (ONNX, a ``torch.export`` program, or a state dict in a named class); check
every mapped output and column against the model's real outputs; write the served graph
(``model.onnx``: the model plus the mapping, tthf's interface); validate it against the
source on random windows and on windows of the held-out dates, at the fp32 bar in output
units; then, and only then, write the run: ``config.json`` (``source = "import"``),
``scalers.json``, ``model.onnx`` and ``import.json`` (the spec, the sources' sha256, the
validation) last. ``[labels]`` columns are checked in the feature files before anything is
validated. Nothing is written when any step fails.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from tthf.engine import runs
from tthf.engine.config import ImportInfo, ModelConfig, RunConfig, Splits, TrainConfig
from tthf.engine.data.dates import parse_dates
from tthf.engine.data.featurefiles import check_label_columns, input_dates, list_feature_dates
from tthf.engine.features import Scalers
from tthf.engine.model.interface import InputSet, ModelIO
from tthf.engine.runtime.backends import OnnxRuntimeBackend
from tthf.engine.store import Store, as_store, open_store
from tthf.errors import DataError, ModelImportError, StoreError, ValidationError
from tthf.export import inputs
from tthf.export.importing.golden import GoldenReport, check_golden
from tthf.export.importing.graph import check_outputs, mapped, raw_onnx, source_outputs, wrap
from tthf.export.importing.scalers import load_scalers
from tthf.export.importing.sources import Source, open_source, read_uri
from tthf.export.importing.spec import ImportSpec, OutputMap, load_spec
from tthf.export.validate import Comparison, compare, enforce, format_table, tolerances

__all__ = ["ImportResult", "import_run", "load_spec", "recheck_golden"]

log = logging.getLogger("tthf.import")

#: random validation batches (N(0, 1): the model sees scaled features) and held-out windows at import
RANDOM_BATCHES = (1, 37, 256)
HELDOUT_WINDOWS = 2048
FORMAT = 1


@dataclass
class ImportResult:
    run: runs.Run
    results: list[Comparison]
    table: str
    notes: list[str]
    seconds: float
    golden: GoldenReport | None = None


def import_run(
    spec: ImportSpec, store: Store | str, *, trust_pickle: bool = False, overwrite: bool = False, seed: int = 0
) -> ImportResult:
    """Bring the spec's model in as a run of ``store``; raises ``ModelImportError`` / ``ValidationError``."""
    t0 = time.perf_counter()
    root = as_store(store)
    names = (("run.experiment", spec.experiment), ("run.model_type", spec.model_type), ("run.run_id", spec.run_id))
    for kind, value in names:
        runs.check_name(kind, value)
    if not overwrite and root.child(f"{spec.experiment}/{spec.model_type}/{spec.run_id}").list(""):
        raise ModelImportError(
            f"run {spec.experiment}/{spec.model_type}/{spec.run_id} already exists in {root.uri()}; pass --overwrite "
            "to replace it or choose another run.run_id"
        )
    scalers, outputs, scaler_keys = load_scalers(spec, trust_pickle=trust_pickle)
    source = open_source(spec)
    config = run_config(spec, outputs, source)
    check_labels(spec, config)
    io_ = ModelIO.of(config.model)
    probe = source_outputs(source, io_.dummy_inputs([3], seed)[0].x)
    check_outputs(outputs, {k: tuple(v.shape) for k, v in probe.items()}, 3)
    raw = raw_onnx(source, io_.seq_len, io_.n_features, list(probe))
    served = wrap(raw, outputs, io_.seq_len, io_.n_features)
    served_bytes = served.SerializeToString()
    sets, notes = validation_sets(spec, config, scalers, seed)
    results = validate(source, served_bytes, outputs, sets, config.model)
    enforce(results)
    golden = None
    if spec.golden is not None:
        backend = OnnxRuntimeBackend.from_onnx(served_bytes)
        golden = check_golden(spec.golden, config, scalers, backend, as_store(config.data_root))
        enforce_golden(spec, golden)
    ref = runs.create_run(root, spec.experiment, spec.model_type, spec.run_id, overwrite=overwrite)
    ref.store.write_text(runs.SCALERS, scalers.to_json())
    ref.store.write_bytes(runs.IMPORTED_MODEL, served_bytes)
    run = runs.Run.new(ref, config)
    seconds = time.perf_counter() - t0
    record = import_record(spec, source, scaler_keys, outputs, results, notes, served_bytes, seconds)
    record["golden"] = golden.to_dict() if golden else None
    run.write_text(runs.IMPORT_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return ImportResult(run, results, format_table(results), notes, seconds, golden)


def recheck_golden(spec: ImportSpec, store: Store | str) -> GoldenReport:
    """``tthf-import --check-golden``: the spec's ``[golden]`` dates against the imported run as it is now.

    The run's served graph (ONNX Runtime, CPU), config and scalers predict each date through
    ``tthf-run``'s code path; a miss raises ``ValidationError`` with the table.
    """
    if spec.golden is None:
        raise ModelImportError(f"{spec.source}: --check-golden needs a [golden] section naming the user's predictions")
    run = runs.open_run(as_store(store), spec.run_id, experiment=spec.experiment, model_type=spec.model_type)
    backend = OnnxRuntimeBackend.from_onnx(run.read_bytes(runs.IMPORTED_MODEL))
    report = check_golden(spec.golden, run.config, run.load_scalers(), backend, as_store(run.config.data_root))
    enforce_golden(spec, report)
    return report


def enforce_golden(spec: ImportSpec, report: GoldenReport) -> None:
    """The golden check's verdict: a miss is a ``ValidationError`` carrying the whole table."""
    if not report.passed:
        raise ValidationError(
            f"{spec.source}: the golden check failed: tthf's {report.mode} predictions differ from the user's "
            "(missing or extra rows, or values beyond the fp32 bar); docs/import.md, 'Windows count session "
            f"minutes', says where a script that counts rows differs\n{report.table()}"
        )


def check_labels(spec: ImportSpec, config: RunConfig) -> None:
    """``[labels]``' columns are in the feature files and numeric, checked at import rather than at tthf-eval.

    Checked on the files of the held-out and golden dates that have files (the golden check
    reports the others), or of the latest date with files when the spec lists none.
    """
    files = config.feature_files
    if files is None or not files.labels:
        return
    store = open_store(files.root)
    have = list_feature_dates(store, files)
    listed = {dt.date.fromisoformat(d) for d in [*config.splits.test, *(spec.golden.dates if spec.golden else ())]}
    try:
        check_label_columns(store, files, sorted(listed & set(have)) or have[-1:])
    except DataError as exc:
        raise ModelImportError(f"{spec.source}: {exc}") from exc


def run_config(spec: ImportSpec, outputs: dict[str, OutputMap], source: Source) -> RunConfig:
    """``config.json`` of the imported run: the interface, the output scales for the bars, the confidence meaning."""
    band = {name: c.band for name, c in spec.confidence.items() if c.kind == "band"}
    defaults = ModelConfig(n_features=0)
    model = ModelConfig(
        n_features=len(spec.feature_names),
        seq_len=spec.seq_len,
        # The fp32 bar's atol scales with the output's unit: the affine map's scale is the model's unit.
        ret_scale=abs(outputs["ret_1h"].scale) or 1.0,
        vol_scale=abs(outputs["vol_10m"].scale) or 1.0,
        ret_band=band.get("ret_conf", defaults.ret_band),
        vol_band=band.get("vol_conf", defaults.vol_band),
    )
    train, heldout = _dates(spec)
    files = spec.feature_files
    return RunConfig(
        model=model,
        feature_names=list(spec.feature_names),
        splits=Splits(train=train, val=[], test=heldout),
        train=TrainConfig(),
        data_root=spec.raw_root or (spec.feature_files.root if spec.feature_files else ""),
        sample_every=spec.sample_every,
        calendar=spec.calendar,
        model_type=spec.model_type,
        source="import",
        imported=ImportInfo(
            format=source.format,
            confidence={name: c.kind for name, c in spec.confidence.items()},
            computed=spec.computed,
            groups=dict(spec.groups),
        ),
        feature_files=files,
    )


def _dates(spec: ImportSpec) -> tuple[list[str], list[str]]:
    """``[data]``'s training and held-out dates, selected among the dates the run has inputs for."""
    files, computed = spec.feature_files, spec.computed
    if spec.raw_root is None and files is not None and computed:
        raise ModelImportError(f"{spec.source}: features {computed} are computed from raw bars: give [data] raw_root")
    if spec.raw_root is None and files is None:
        if spec.train_dates or spec.heldout_dates:
            raise ModelImportError(f"{spec.source}: data.train_dates/heldout_dates need data.raw_root")
        return [], []
    root = spec.raw_root or (files.root if files else "")
    if not (spec.train_dates or spec.heldout_dates):
        return [], []
    available = input_dates(open_store(root), files, computed=bool(computed))
    picked = []
    for text in (spec.train_dates, spec.heldout_dates):
        days = parse_dates(text, available, source=root, calendar=spec.calendar).dates if text else []
        picked.append([d.isoformat() for d in days])
    overlap = sorted(set(picked[0]) & set(picked[1]))
    if overlap:
        raise ModelImportError(f"{spec.source}: data.heldout_dates overlap the training dates on {overlap[:5]}")
    return picked[0], picked[1]


def validation_sets(
    spec: ImportSpec, config: RunConfig, scalers: Scalers, seed: int
) -> tuple[list[InputSet], list[str]]:
    """Random batches, plus windows of the held-out dates when ``[data]`` names them; notes say what is missing."""
    sets = ModelIO.of(config.model).dummy_inputs(RANDOM_BATCHES, seed)
    if not config.splits.test:
        return sets, ["held-out windows not validated: the spec names no data.raw_root and data.heldout_dates"]
    try:
        x = inputs.sample_windows(config, scalers, HELDOUT_WINDOWS, as_store(config.data_root), seed=seed)
    except (DataError, StoreError) as exc:
        return sets, [f"held-out windows not validated: {exc}"]
    return [*sets, InputSet(f"heldout@{len(x)}", x)], []


def validate(
    source: Source, served: bytes, outputs: dict[str, OutputMap], sets: list[InputSet], model: ModelConfig
) -> list[Comparison]:
    """The served graph (ONNX Runtime, CPU) against the source model plus the mapping, at the fp32 bar."""
    backend = OnnxRuntimeBackend.from_onnx(served)
    results = []
    for s in sets:
        reference = mapped(source_outputs(source, s.x), outputs)
        results += compare(
            reference,
            backend.predict(s.x),
            artifact=runs.IMPORTED_MODEL,
            backend=f"{backend.name} vs {source.format}",
            inputs=s.name,
            precision="fp32",
            tolerance=tolerances("fp32", model),
        )
    return results


def import_record(
    spec: ImportSpec,
    source: Source,
    scaler_keys: list[str],
    outputs: dict[str, OutputMap],
    results: list[Comparison],
    notes: list[str],
    served: bytes,
    seconds: float,
) -> dict[str, object]:
    """``import.json``: what was brought in from where (sha256 of every source), the mapping and the validation."""

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    return {
        "format": FORMAT,
        "spec": spec.source,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sources": {
            "model": {"path": spec.model_path, "format": source.format, "sha256": sha(source.data)},
            "scalers": {
                "path": spec.scalers_path,
                "format": spec.scalers_format,
                "sha256": sha(read_uri(spec.scalers_path)),
                "used": scaler_keys,
            },
            "class": spec.model_class,
            "kwargs": spec.kwargs,
        },
        "served": {"key": runs.IMPORTED_MODEL, "sha256": sha(served)},
        "outputs": {name: asdict(out) for name, out in outputs.items()},
        "validation": [r.to_dict() for r in results],
        "max_abs": max_abs(results),
        "notes": notes,
        "seconds": round(seconds, 3),
    }


def max_abs(results: list[Comparison]) -> dict[str, float]:
    """The largest difference per output over every input set (the import's summary line)."""
    return {
        name: float(np.max([r.max_abs for r in results if r.output == name])) for name in {r.output for r in results}
    }

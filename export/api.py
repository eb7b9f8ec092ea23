"""``export_run``: checkpoint -> fp32 ONNX -> fp16 ONNX -> TensorRT engine, each validated.

CTranslate2's converter skeleton: ``build_artifacts`` (export and convert in memory),
``validate_artifacts`` (every artifact against the PyTorch reference, through the same
backend classes that ``tthf-run`` serves with, picked from their specs: ``gates``),
``write_export`` (files, manifest last). Nothing is written unless every served artifact
passed, so a failed export leaves the previous one intact (and ``tthf-run`` keeps using it).
Optional variants (``BackendSpec.optional``: the bf16 path) are validated at their own bar and
recorded in the manifest as accepted or rejected with their numbers: as Optimum's exporter
treats a tolerance miss, a variant ``auto`` never serves does not fail the export. A new
export replaces ``export/`` except the timing caches, which do not depend on the weights
and make the next build faster.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from tthf.engine import runs
from tthf.engine.artifacts import Manifest, read_artifact, source_hashes
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import ROUNDING, InputSet, ModelIO, Outputs
from tthf.engine.runtime.backends import REGISTRY, BackendSpec, TensorRTBackend
from tthf.engine.runtime.backends.base import Backend
from tthf.engine.runtime.backends.tensorrt import current_target, unavailable_reason
from tthf.engine.store import Store, as_store
from tthf.errors import BackendUnavailableError, ExportError
from tthf.export import inputs, int8, quality
from tthf.export.config import ExportConfig
from tthf.export.fp16 import IMPORTED_FP32_OPS, convert_to_fp16, precision_summary
from tthf.export.onnx_export import export_onnx
from tthf.export.reference import reference_backend
from tthf.export.tensorrt_build import build_engine
from tthf.export.validate import Comparison, bars, compare, enforce, failures, format_table, summarize

log = logging.getLogger("tthf.export")


@dataclass
class ExportResult:
    manifest: Manifest
    results: list[Comparison]
    table: str
    engine_message: str  # where the engine is, or why it was not built and the command that builds it

    def variants_line(self) -> str:
        """One line: each optional variant accepted, rejected or unavailable (empty without variants)."""
        parts = [f"{name} {v['status']}" for name, v in sorted(self.manifest.variants.items())]
        return f"optional variants: {', '.join(parts)}" if parts else ""


@dataclass
class Artifacts:
    """The export in memory: file name -> bytes, and each artifact's manifest record."""

    files: dict[str, bytes] = field(default_factory=dict)
    records: dict[str, dict[str, object]] = field(default_factory=dict)

    def add(self, name: str, data: bytes, **info: object) -> None:
        self.files[name] = data
        self.records[name] = info


def tool_versions() -> dict[str, str | None]:
    """Versions of the libraries that produce or run artifacts (None: not installed)."""
    import onnx
    import torch

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "cuda": torch.version.cuda,
    }
    for module in ("onnxruntime", "tensorrt", "openvino"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return versions


def build_command(run: runs.Run) -> str:
    return (
        f"tthf-export --run {run.ref.run_id} --store {run.ref.root} --experiment {run.ref.experiment} "
        "--require-engine   # on a host with a CUDA GPU and pip install 'tthf[gpu-cu12]' or 'tthf[gpu-cu13]' "
        "(torch's CUDA major)"
    )


def validate_artifact(
    backend: Backend,
    reference: dict[str, Outputs],
    sets: list[InputSet],
    *,
    artifact: str,
    precision: str,
    run: runs.Run,
) -> list[Comparison]:
    """Compare ``backend`` with the reference outputs on every input set (collects, does not raise).

    Under a spread bar the sets of one kind are pooled first (``random@1830``, ``heldout@2048``):
    a spread taken over one small batch, or over the adjacent windows of one held-out part, says
    more about that batch than about the model's outputs.
    """
    tol = bars(precision, run.config.model)
    got = {s.name: backend.predict(s.x) for s in sets}
    groups = [[s.name] for s in sets]
    if precision in ROUNDING:
        kinds: dict[str, list[str]] = {}
        for s in sets:
            kinds.setdefault(s.name.split("@")[0], []).append(s.name)
        groups = list(kinds.values())
    results = []
    for names in groups:
        want, have = pool([reference[n] for n in names]), pool([got[n] for n in names])
        label = names[0] if len(names) == 1 else f"{names[0].split('@')[0]}@{len(have[OUTPUT_NAMES[0]])}"
        results += compare(
            want, have, artifact=artifact, backend=backend.name, inputs=label, precision=precision, tolerance=tol
        )
    return results


def pool(parts: list[Outputs]) -> Outputs:
    """The outputs of several input sets as one."""
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def validation_batches(cfg: ExportConfig) -> tuple[int, ...]:
    """The random batch sizes: the configured ones and each engine profile's ``opt`` batch."""
    return tuple(dict.fromkeys((*cfg.random_batches, *cfg.opt_batches)))


def validation_sets(run: runs.Run, cfg: ExportConfig, data: Store | None) -> tuple[list[InputSet], list[str]]:
    """Random batches (also one at every optimization profile's batch, so each profile is validated)
    plus held-out windows; notes say why held-out windows are missing."""
    sets = ModelIO.of(run.config.model).dummy_inputs(validation_batches(cfg), cfg.seed)
    held, missing = inputs.heldout_sets(run, cfg.real_windows, max(cfg.opt_batches[0], 1), data, seed=cfg.seed)
    notes = []
    if missing:
        notes.append(f"held-out windows not validated: {missing}")
        log.warning("%s", notes[-1])
    return sets + held, notes


def build_artifacts(run: runs.Run, cfg: ExportConfig) -> Artifacts:
    """The fp32 ONNX and its fp16 variant, in memory."""
    mcfg = run.config.model
    t0 = time.perf_counter()
    out = Artifacts()
    if run.config.imported is not None:  # the imported graph, byte for byte (served graphs must match it)
        fp32_bytes = run.read_bytes(runs.IMPORTED_MODEL)
        fp32 = onnx.load_from_string(fp32_bytes)
        out.add(runs.FP32_ONNX, fp32_bytes, precision="fp32", exporter="import", built_from=runs.IMPORTED_MODEL)
    else:
        fp32 = export_onnx(
            run.load_model(), seq_len=mcfg.seq_len, n_features=mcfg.n_features, exporter=cfg.exporter, opset=cfg.opset
        )
        fp32.metadata_props.add(key="tthf.run", value=run.ref.name)
        out.add(runs.FP32_ONNX, fp32.SerializeToString(), precision="fp32", exporter=cfg.exporter, opset=cfg.opset)
    fp16 = convert_to_fp16(fp32, fp32_ops=IMPORTED_FP32_OPS if run.config.imported is not None else frozenset())
    out.add(runs.FP16_ONNX, fp16.SerializeToString(), precision="fp16", opset=cfg.opset, **precision_summary(fp16))
    log.info(
        "exported ONNX (%s, opset %d) and its fp16 variant in %.1f s", cfg.exporter, cfg.opset, time.perf_counter() - t0
    )
    return out


def add_int8(run: runs.Run, cfg: ExportConfig, built: Artifacts, data: Store | None, notes: list[str]) -> str:
    """The int8 IR (``tthf.export.int8``) into ``built``, calibrated on training windows; returns why it
    could not be built ('' when it was), also added to ``notes``."""
    files, why = int8.build(run, built.files[runs.FP32_ONNX], cfg.calibration_windows, data, seed=cfg.seed)
    if why:
        notes.append(f"int8 variant not built: {why}")
    for name, data_bytes in files.items():
        built.add(name, data_bytes, precision="int8", built_from=runs.FP32_ONNX, calibration="training dates")
    return why


def gates() -> list[BackendSpec]:
    """The backends that serve ``model.onnx`` on the CPU at fp32: export validates it through each
    (and their ``also_validates`` files), and any miss fails the export."""
    return [
        spec
        for spec in REGISTRY.values()
        if spec.device == "cpu"
        and spec.needs.artifact == runs.FP32_ONNX
        and spec.precision == "fp32"
        and not spec.optional
    ]


#: why a variant's artifact is missing from an export that was not asked to build it, by precision
NOT_BUILT = {"int8": "this export was made without --int8; tthf-export --int8 builds it"}


#: precisions whose ranges are calibrated on real windows: judged on real (held-out) windows only,
#: since N(0, 1) draws lie outside the calibrated ranges by construction (docs/export.md, "INT8")
CALIBRATED = {"int8"}


def variants() -> list[BackendSpec]:
    """The optional variants: validated at their own bar and recorded, never a reason to fail the export."""
    return [spec for spec in REGISTRY.values() if spec.optional]


def validate_artifacts(
    run: runs.Run, built: Artifacts, sets: list[InputSet], reference: dict[str, Outputs]
) -> tuple[list[Comparison], list[str]]:
    """The served artifacts through every gate that runs here (on the CPU, as export opens them:
    ``from_onnx``), each at its own precision; notes say what could not be validated here.

    A gate that is not installed is skipped with a note, but every artifact must pass through at
    least one: an artifact no gate could run raises the reason of the first that could not.
    """
    results, notes = [], []
    unavailable: dict[str, BackendUnavailableError] = {}
    validated = set()
    for spec in gates():
        for artifact, precision in ((runs.FP32_ONNX, spec.precision), *spec.also_validates):
            try:
                backend = spec.cls.from_onnx(built.files[artifact])
            except BackendUnavailableError as exc:
                notes.append(f"{artifact} not validated through {spec.name}: {exc}")
                log.info("%s", notes[-1])
                unavailable.setdefault(artifact, exc)
                continue
            results += validate_artifact(backend, reference, sets, artifact=artifact, precision=precision, run=run)
            validated.add(artifact)
    for artifact, reason in unavailable.items():
        if artifact not in validated:
            raise reason
    return results, notes


def validate_variant(
    spec: BackendSpec,
    run: runs.Run,
    files: dict[str, bytes],
    sets: list[InputSet],
    reference: dict[str, Outputs],
    judge: quality.Judge | None = None,
    unbuilt: str = "",
) -> tuple[dict[str, object], list[Comparison]]:
    """One optional variant at its own bar and by its forecast quality (``judge``), on the export's
    ``files``: its manifest record (accepted, rejected with the failing numbers, unavailable with
    the reason, or not built) and its comparisons; never raises on a miss. ``unbuilt``: why its
    artifact, asked for, could not be built (then it is unavailable, not 'not built')."""
    record: dict[str, object] = {"artifact": spec.needs.artifact, "precision": spec.precision}
    if spec.needs.artifact not in files:
        if unbuilt:
            return {**record, "status": "unavailable", "reason": unbuilt}, []
        return {**record, "status": "not built", "reason": NOT_BUILT.get(spec.precision, "not built")}, []
    if spec.precision in CALIBRATED:
        sets = [s for s in sets if not s.name.startswith("random@")]
        if not sets:
            return {**record, "status": "unavailable", "reason": "no held-out windows to judge it on"}, []
    try:
        backend = spec.cls.from_files(files)
    except BackendUnavailableError as exc:
        log.info("%s not validated: %s", spec.name, exc)
        return {**record, "status": "unavailable", "reason": str(exc)}, []
    results = validate_artifact(
        backend, reference, sets, artifact=str(spec.needs.artifact), precision=spec.precision, run=run
    )
    judged = judge(backend) if judge is not None else None
    missed = judged["failed"] if judged else ""
    failed = "; ".join(f for f in (failures(results), missed and f"forecast quality: {missed}") if f)
    if failed:
        log.warning("optional variant %s rejected (not served; the export goes on): %s", spec.name, failed)
    record.update(status="rejected" if failed else "accepted", reason=failed)
    record["worst"] = [r.to_dict() for r in summarize(results)]
    if judged is not None:
        record["quality"] = judged
    return record, results


def auto_note(manifest: Manifest) -> str:
    """What ``--backend auto`` will serve on a CPU host after an opt-in (``--auto-precision``); '' without one."""
    if manifest.auto_precision == "fp32":
        return ""
    precision = manifest.auto_precision
    accepted = [
        name
        for name, v in sorted(manifest.variants.items())
        if v["precision"] == precision and v["status"] == "accepted"
    ]
    if accepted:
        return f"--backend auto serves {precision} ({', '.join(accepted)}) on CPU hosts that run it (--auto-precision)"
    return f"--auto-precision {precision}: no {precision} variant was accepted, so --backend auto serves fp32"


def reference_outputs(run: runs.Run, sets: list[InputSet]) -> dict[str, Outputs]:
    """The fp32 reference (``tthf.export.reference``) on every input set."""
    reference = reference_backend(run)
    return {s.name: reference.predict(s.x) for s in sets}


def build_and_validate_engine(
    run: runs.Run, fp16_onnx: bytes, cfg: ExportConfig, sets: list[InputSet], reference: dict[str, Outputs]
) -> tuple[Artifacts, list[Comparison]]:
    """Build the engine for this GPU (reusing its timing cache) and validate it at fp16 tolerance.

    Returns the engine and its updated timing cache as artifacts, and the results;
    raises ``ValidationError`` when the engine disagrees with the reference.
    """
    target = current_target()
    mcfg = run.config.model
    cache_key = runs.export_key(target.timing_cache_filename())
    cache = run.read_bytes(cache_key) if run.exists(cache_key) else None
    t0 = time.perf_counter()
    engine_bytes, new_cache, cache_used = build_engine(
        fp16_onnx,
        seq_len=mcfg.seq_len,
        n_features=mcfg.n_features,
        min_batch=cfg.min_batch,
        opt_batches=cfg.opt_batches,
        max_batch=cfg.max_batch,
        workspace_mib=cfg.workspace_mib,
        timing_cache=cache,
    )
    log.info(
        "built TensorRT engine in %.1f s (timing cache %s)",
        time.perf_counter() - t0,
        "reused" if cache_used else ("rejected, rebuilt" if cache else "new"),
    )
    name = target.engine_filename()
    backend = TensorRTBackend.from_bytes(engine_bytes, source=name)
    results = validate_artifact(backend, reference, sets, artifact=name, precision="fp16", run=run)
    enforce(results)
    out = Artifacts()
    out.add(name, engine_bytes, precision="fp16", kind="tensorrt", built_from=runs.FP16_ONNX, **target.__dict__)
    out.add(target.timing_cache_filename(), new_cache)
    return out, results


def write_export(run: runs.Run, built: Artifacts, manifest: Manifest) -> None:
    """Replace ``export/`` (timing caches kept) with ``built``; the manifest last."""
    for key in run.store.list(runs.EXPORT_DIR):
        name = key.rsplit("/", 1)[-1]
        if not runs.is_timing_cache(name) and name not in built.files:
            run.store.delete(key)
    for name, data in built.files.items():
        run.write_bytes(runs.export_key(name), data)
    manifest.write(run)


def export_run(run: runs.Run, cfg: ExportConfig, *, data: Store | str | None = None) -> ExportResult:
    """Export, validate and write ``export/`` of ``run``; raises ``ValidationError`` when a served
    artifact mismatches (an optional variant's miss is recorded as ``rejected`` instead).

    ``data`` (default: the run's training data root) supplies the held-out windows.
    """
    missing_engine = unavailable_reason()
    if missing_engine and cfg.require_engine:
        raise ExportError(
            f"--require-engine: the TensorRT engine cannot be built here: {missing_engine}. "
            f"Build it on a GPU host: {build_command(run)}"
        )
    built = build_artifacts(run, cfg)
    store = as_store(data) if data is not None else None
    sets, notes = validation_sets(run, cfg, store)
    reference = reference_outputs(run, sets)
    results, validation_notes = validate_artifacts(run, built, sets, reference)
    enforce(results)
    notes += validation_notes
    manifest = Manifest(
        run=run.ref.name, sources=source_hashes(run), export_config=cfg.to_dict(), versions=tool_versions(), notes=notes
    )
    manifest.auto_precision = cfg.auto_precision
    unbuilt = {"int8": add_int8(run, cfg, built, store, notes)} if cfg.int8 else {}
    judge = quality.Judge(run, cfg.quality_windows, store, seed=cfg.seed)
    for spec in variants():
        manifest.variants[spec.name], variant_results = validate_variant(
            spec, run, built.files, sets, reference, judge, unbuilt.get(spec.precision, "")
        )
        results += variant_results
    if opt_in := auto_note(manifest):
        notes.append(opt_in)
    if missing_engine:
        engine_message = (
            f"TensorRT engine not built: {missing_engine}.\nBuild it on a GPU host with:\n  {build_command(run)}"
        )
        manifest.engine = {"built": False, "reason": missing_engine, "command": build_command(run)}
    else:
        engine, engine_results = build_and_validate_engine(run, built.files[runs.FP16_ONNX], cfg, sets, reference)
        results += engine_results
        built.files.update(engine.files)
        name = current_target().engine_filename()
        built.records[name] = engine.records[name]
        manifest.engine = {"built": True, "file": name, **current_target().__dict__}
        engine_message = f"TensorRT engine {name} built for {current_target().gpu_name}"
    for name, record in built.records.items():
        manifest.add_artifact(name, built.files[name], **record)
    manifest.validation = [r.to_dict() for r in results]
    write_export(run, built, manifest)
    return ExportResult(manifest, results, format_table(results), engine_message)


def rebuild_engine(run: runs.Run, manifest: Manifest) -> str:
    """Build the engine for this host's GPU/TensorRT from the exported fp16 ONNX and add it to the manifest.

    The ``rebuild`` action of ``TensorRTBackend.from_run``, for a run exported on another
    GPU or TensorRT version. The engine is validated at fp16 tolerance on fresh random
    inputs before it is written.
    """
    cfg = ExportConfig.from_dict(manifest.export_config)
    fp16_onnx = read_artifact(run, manifest, runs.FP16_ONNX)
    sets = ModelIO.of(run.config.model).dummy_inputs(validation_batches(cfg), cfg.seed)
    engine, results = build_and_validate_engine(run, fp16_onnx, cfg, sets, reference_outputs(run, sets))
    for name, data in engine.files.items():
        run.write_bytes(runs.export_key(name), data)
    name = current_target().engine_filename()
    manifest.add_artifact(name, engine.files[name], **engine.records[name])
    manifest.validation += [r.to_dict() for r in results]
    manifest.write(run)
    log.info("rebuilt TensorRT engine %s for %s\n%s", name, current_target().gpu_name, format_table(results))
    return name

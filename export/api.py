"""``export_run``: checkpoint -> fp32 ONNX -> fp16 ONNX -> TensorRT engine, each validated.

Order of work: everything is built and validated in memory first; files are written
only when every artifact passed, manifest last, so a failed export leaves the previous
one intact (and ``tthf-run`` keeps using it). A new export replaces ``export/`` except
the timing caches, which do not depend on the weights and make the next build faster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tthf.engine import runs
from tthf.engine.config import OUTPUT_NAMES, ModelConfig
from tthf.engine.model.network import ThreeHeadedTransformer, load_checkpoint
from tthf.errors import ExportError, RunFormatError
from tthf.export import inputs as inputs_mod
from tthf.export import tensorrt_engine as trt_engine
from tthf.export.config import ExportConfig
from tthf.export.fp16 import convert_to_fp16, precision_summary
from tthf.export.manifest import Manifest, source_hashes, tool_versions
from tthf.export.onnx_export import export_onnx
from tthf.export.validate import Comparison, compare, enforce, format_table, tolerances

log = logging.getLogger("tthf.export")

FP32_ONNX = "model.onnx"
FP16_ONNX = "model_fp16.onnx"

Predict = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class ExportResult:
    manifest: Manifest
    results: list[Comparison]
    table: str
    engine_message: str  # where the engine is, or why it was not built and the command that builds it


def load_reference(run: runs.Run) -> ThreeHeadedTransformer:
    if not run.exists(runs.CHECKPOINT):
        raise RunFormatError(f"run {run.ref.name} at {run.ref.uri} has no {runs.CHECKPOINT}; re-create it with tthf-train")
    return load_checkpoint(run.read_bytes(runs.CHECKPOINT), run.config.model, source=run.store.uri(runs.CHECKPOINT))


def torch_predict(model: ThreeHeadedTransformer, batch_size: int = 4096) -> Predict:
    """The PyTorch reference as a ``Predict`` on CPU float32."""
    import torch

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        parts = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                parts.append([t.numpy() for t in model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])))])
        return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(OUTPUT_NAMES)}

    return predict


def ort_predict(onnx_bytes: bytes, threads: int | None = None) -> Predict:
    """ONNX Runtime on CPU (validation runs where the export runs; the GPU path is the engine)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(OUTPUT_NAMES, sess.run(list(OUTPUT_NAMES), {"features": x})))

    return predict


def validate(predict: Predict, reference: dict[str, dict[str, np.ndarray]], sets: list[inputs_mod.InputSet], *,
             artifact: str, backend: str, precision: str, model: ModelConfig) -> list[Comparison]:
    tol = tolerances(precision, model)
    results = []
    for s in sets:
        results += compare(reference[s.name], predict(s.x), artifact=artifact, backend=backend, inputs=s.name,
                           precision=precision, tolerance=tol)
    return results


def build_command(run: runs.Run, store_uri: str) -> str:
    return (f"tthf-export --run {run.ref.run_id} --store {store_uri} --experiment {run.ref.experiment} "
            "--require-engine   # on a host with a CUDA GPU and pip install 'tthf[gpu]'")


def export_run(run: runs.Run, cfg: ExportConfig, *, store_uri: str, data_root: str | None = None,
               endpoint_url: str | None = None) -> ExportResult:
    """Export, validate and write ``export/`` of ``run``; raises ``ValidationError`` on any mismatch."""
    missing_engine = trt_engine.unavailable_reason()
    if missing_engine and cfg.require_engine:
        raise ExportError(
            f"--require-engine: the TensorRT engine cannot be built here: {missing_engine}. "
            f"Build it on a GPU host: {build_command(run, store_uri)}"
        )
    mcfg = run.config.model
    model = load_reference(run)
    t0 = time.perf_counter()
    fp32 = export_onnx(model, seq_len=mcfg.seq_len, n_features=mcfg.n_features, exporter=cfg.exporter, opset=cfg.opset)
    fp32.metadata_props.add(key="tthf.run", value=run.ref.name)
    fp16 = convert_to_fp16(fp32)
    b32, b16 = fp32.SerializeToString(), fp16.SerializeToString()
    log.info("exported ONNX (%s, opset %d) and its fp16 variant in %.1f s", cfg.exporter, cfg.opset,
             time.perf_counter() - t0)

    sets = inputs_mod.random_sets(cfg.random_batches, mcfg.seq_len, mcfg.n_features, cfg.seed)
    held, held_missing = inputs_mod.heldout_sets(run, cfg.real_windows, max(cfg.opt_batches[0], 1),
                                                 data_root=data_root, endpoint_url=endpoint_url, seed=cfg.seed)
    notes = []
    if held_missing:
        notes.append(f"held-out windows not validated: {held_missing}")
        log.warning("%s", notes[-1])
    sets += held
    ref_predict = torch_predict(model)
    reference = {s.name: ref_predict(s.x) for s in sets}

    results = validate(ort_predict(b32), reference, sets, artifact=FP32_ONNX, backend="onnxruntime-cpu",
                       precision="fp32", model=mcfg)
    results += validate(ort_predict(b16), reference, sets, artifact=FP16_ONNX, backend="onnxruntime-cpu",
                        precision="fp16", model=mcfg)
    enforce(results)

    manifest = Manifest(run=run.ref.name, sources=source_hashes(run), export_config=cfg.to_dict(),
                        versions=tool_versions(), notes=notes)
    manifest.add_artifact(FP32_ONNX, b32, precision="fp32", exporter=cfg.exporter, opset=cfg.opset)
    manifest.add_artifact(FP16_ONNX, b16, precision="fp16", opset=cfg.opset, **precision_summary(fp16))
    files = {FP32_ONNX: b32, FP16_ONNX: b16}

    if missing_engine:
        engine_message = (f"TensorRT engine not built: {missing_engine}.\n"
                          f"Build it on a GPU host with:\n  {build_command(run, store_uri)}")
        manifest.engine = {"built": False, "reason": missing_engine, "command": build_command(run, store_uri)}
    else:
        name, engine_bytes, cache, engine_results = build_and_validate_engine(run, b16, cfg, sets, reference)
        results += engine_results
        files[name] = engine_bytes
        files[cache[0]] = cache[1]
        target = trt_engine.current_target()
        manifest.add_artifact(name, engine_bytes, precision="fp16", kind="tensorrt", built_from=FP16_ONNX,
                              **target.__dict__)
        manifest.engine = {"built": True, "file": name, **target.__dict__}
        engine_message = f"TensorRT engine {name} built for {target.gpu_name} (compute {target.compute_capability})"
    manifest.validation = [r.to_dict() for r in results]

    keep = {k for k in run.store.list(runs.EXPORT_DIR) if k.rsplit("/", 1)[-1].startswith("timing.")}
    for key in run.store.list(runs.EXPORT_DIR):
        if key not in keep and key.rsplit("/", 1)[-1] not in files:
            run.store.delete(key)
    for fname, data in files.items():
        run.write_bytes(f"{runs.EXPORT_DIR}/{fname}", data)
    manifest.write(run)
    return ExportResult(manifest, results, format_table(results), engine_message)


def build_and_validate_engine(run: runs.Run, fp16_onnx: bytes, cfg: ExportConfig, sets: list[inputs_mod.InputSet],
                              reference: dict[str, dict[str, np.ndarray]]
                              ) -> tuple[str, bytes, tuple[str, bytes], list[Comparison]]:
    """Build the engine for this GPU (reusing its timing cache) and validate it at fp16 tolerance.

    Returns (engine file name, engine bytes, (cache file name, cache bytes), results); raises
    ``ValidationError`` when the engine disagrees with the reference.
    """
    target = trt_engine.current_target()
    mcfg = run.config.model
    cache_key = f"{runs.EXPORT_DIR}/{target.timing_cache_filename()}"
    cache = run.read_bytes(cache_key) if run.exists(cache_key) else None
    t0 = time.perf_counter()
    engine_bytes, new_cache = trt_engine.build_engine(
        fp16_onnx, seq_len=mcfg.seq_len, n_features=mcfg.n_features, min_batch=cfg.min_batch,
        opt_batches=cfg.opt_batches, max_batch=cfg.max_batch, workspace_mib=cfg.workspace_mib, timing_cache=cache,
    )
    log.info("built TensorRT engine in %.1f s (timing cache %s)", time.perf_counter() - t0,
             "reused" if cache else "new")
    name = target.engine_filename()
    engine = trt_engine.TensorRTEngine(engine_bytes, source=name)
    results = validate(engine.predict, reference, sets, artifact=name, backend="tensorrt", precision="fp16",
                       model=mcfg)
    enforce(results)
    return name, engine_bytes, (target.timing_cache_filename(), new_cache), results



def rebuild_engine(run: runs.Run, manifest: Manifest) -> str:
    """Build the engine for this host's GPU/TensorRT from the exported fp16 ONNX and add it to the manifest.

    Used when a run was exported on another GPU or TensorRT version. The engine is
    validated at fp16 tolerance on fresh random inputs before it is written.
    """
    from tthf.export.manifest import read_artifact

    cfg = ExportConfig.from_dict(manifest.export_config)
    fp16_onnx = read_artifact(run, manifest, FP16_ONNX)
    mcfg = run.config.model
    sets = inputs_mod.random_sets(cfg.random_batches, mcfg.seq_len, mcfg.n_features, cfg.seed)
    ref_predict = torch_predict(load_reference(run))
    reference = {s.name: ref_predict(s.x) for s in sets}
    name, engine_bytes, (cache_name, cache), results = build_and_validate_engine(run, fp16_onnx, cfg, sets, reference)
    target = trt_engine.current_target()
    run.write_bytes(f"{runs.EXPORT_DIR}/{name}", engine_bytes)
    run.write_bytes(f"{runs.EXPORT_DIR}/{cache_name}", cache)
    manifest.add_artifact(name, engine_bytes, precision="fp16", kind="tensorrt", built_from=FP16_ONNX,
                          **target.__dict__)
    manifest.validation += [r.to_dict() for r in results]
    manifest.write(run)
    log.info("rebuilt TensorRT engine %s for %s\n%s", name, target.gpu_name, format_table(results))
    return name

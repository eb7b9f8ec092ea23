"""The read side of ``export/manifest.json``: what was exported from what, and whether it still holds.

The manifest binds the exported artifacts to the run: the sha256 of the checkpoint,
config and scalers they were made from, and of every artifact file. Backends call
``Manifest.read`` and ``check_fresh`` before loading anything, and ``read_artifact``
to load: an export made from another checkpoint (the run was retrained afterwards) or
an artifact whose bytes changed is a ``StaleArtifactError`` that says to re-export.
``tthf.export`` builds and writes the manifest; it lives here so that inference never
imports the exporter (the layout in the manifest is TensorRT-LLM's ``Engine.from_dir``
idea: the owner of a folder's format also reads it back).

Two more checks bind what is served to the run (docs/import.md, "Export and provenance"): the
manifest carries ``digest``, the sha256 of its own canonical JSON, so a manifest edited by hand
(or partly copied) is refused; and an imported run's ``export/model.onnx`` must be its imported
``model.onnx`` byte for byte, so a foreign graph beside a rewritten manifest is refused too.
The digest is a consistency check, not a signature: it needs no secret, so it cannot stop
someone who recomputes it with this module.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tthf.engine import runs
from tthf.errors import NotExportedError, RejectedVariantError, RunFormatError, StaleArtifactError

FORMAT = 2  # 2: the manifest's own digest
#: the run files an export is made from (a trained run's checkpoint or an imported run's model);
#: a change to any of them makes the export stale
SOURCES = (runs.CHECKPOINT, runs.IMPORTED_MODEL, runs.CONFIG, runs.SCALERS)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_hashes(run: runs.Run) -> dict[str, str]:
    """sha256 of the run files an export depends on."""
    return {key: run.sha256(key) for key in SOURCES}


def _reexport(run: runs.Run) -> str:
    return f"re-export with: tthf-export --run {run.ref.run_id}"


@dataclass
class Manifest:
    """``export/manifest.json``."""

    run: str
    sources: dict[str, str]
    export_config: dict[str, Any]
    versions: dict[str, str | None]
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)  # {"built": bool, "reason"/"target", "command"}
    validation: list[dict[str, Any]] = field(default_factory=list)
    #: optional variants by backend name: {"status": accepted|rejected|unavailable, "reason", "precision", "worst"}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: what ``--backend auto`` serves on a host without CUDA: "fp32" (the default), or the precision of an
    #: optional variant the export opted into (``tthf-export --auto-precision bf16|int8``); auto serves it
    #: only while that variant is accepted and runs here, else fp32 as without the opt-in
    auto_precision: str = "fp32"
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    format: int = FORMAT
    digest: str = ""  # sha256 of the manifest's canonical JSON without this field (``canonical_digest``)

    def add_artifact(self, name: str, data: bytes, **info: Any) -> None:
        self.artifacts[name] = {"sha256": sha256(data), "bytes": len(data), **info}

    def engines(self) -> list[str]:
        """Names of the TensorRT engines in the export, one per GPU architecture and TensorRT version."""
        return [name for name, info in self.artifacts.items() if info.get("kind") == "tensorrt"]

    def to_json(self) -> str:
        fields = json.loads(json.dumps(self.__dict__))  # tuples as lists: the digest is over what is read back
        return json.dumps({**fields, "digest": canonical_digest(fields)}, indent=2, sort_keys=True) + "\n"

    def write(self, run: runs.Run) -> None:
        run.write_text(runs.EXPORT_MANIFEST, self.to_json())

    @classmethod
    def read(cls, run: runs.Run) -> Manifest:
        where = run.store.uri(runs.EXPORT_MANIFEST)
        if not run.exists(runs.EXPORT_MANIFEST):
            raise NotExportedError(
                f"run {run.ref.name} was never exported (no {runs.EXPORT_MANIFEST}); "
                f"export it first: tthf-export --run {run.ref.run_id}"
            )
        try:
            fields = json.loads(run.read_text(runs.EXPORT_MANIFEST))
            manifest = cls(**fields)
        except (json.JSONDecodeError, TypeError) as exc:
            raise RunFormatError(f"{where} does not parse ({exc}); {_reexport(run)}") from exc
        if manifest.format != FORMAT:
            raise StaleArtifactError(
                f"{where} has format {manifest.format}, this tthf reads {FORMAT}; {_reexport(run)}"
            )
        if manifest.digest != canonical_digest(fields):
            raise StaleArtifactError(
                f"{where} was edited by hand or partly copied (its digest does not match its content); "
                f"only tthf-export writes it: {_reexport(run)}"
            )
        return manifest


def canonical_digest(fields: dict[str, Any]) -> str:
    """sha256 of a manifest's fields (without ``digest``) as sorted, compact JSON."""
    body = {k: v for k, v in fields.items() if k != "digest"}
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def is_exported(run: runs.Run) -> bool:
    return run.exists(runs.EXPORT_MANIFEST)


def check_fresh(run: runs.Run, manifest: Manifest) -> None:
    """Refuse an export made from another checkpoint, config or scalers than the run has now."""
    now = source_hashes(run)
    for key, was in manifest.sources.items():
        if now.get(key) != was:
            raise StaleArtifactError(
                f"the export of run {run.ref.name} is stale: {key} changed since it was exported "
                f"(sha256 {was[:12]}... at export, {now.get(key, '')[:12]}... now); {_reexport(run)}"
            )
    served = manifest.artifacts.get(runs.FP32_ONNX, {}).get("sha256")
    if run.config.imported is not None and served != now[runs.IMPORTED_MODEL]:
        raise StaleArtifactError(
            f"the export of imported run {run.ref.name} does not serve its imported model: {runs.export_key(runs.FP32_ONNX)} "
            f"in the manifest has sha256 {str(served)[:12]}..., {runs.IMPORTED_MODEL} {now[runs.IMPORTED_MODEL][:12]}...; "
            f"{_reexport(run)}"
        )


def check_variant(run: runs.Run, manifest: Manifest, backend: str) -> None:
    """Refuse an optional variant that the export rejected or could not validate (``RejectedVariantError``)."""
    record = manifest.variants.get(backend)
    if record is not None and record.get("status") == "accepted":
        return
    if record is None:
        why = "this export predates variant validation"
    elif record.get("status") == "not built":
        why = str(record.get("reason", ""))
    elif record.get("status") == "rejected":
        why = f"it failed its {record.get('precision', '')} bar at export: {record.get('reason', '')}"
    else:
        why = f"it could not be validated on the export host: {record.get('reason', '')}"
    raise RejectedVariantError(
        f"run {run.ref.name} does not serve {backend}: {why}. Use --backend openvino (fp32, validated), or "
        f"{_reexport(run)} on a host that runs {backend} and check the export's summary line"
    )


def read_artifact(run: runs.Run, manifest: Manifest, name: str) -> bytes:
    """The bytes of ``export/{name}``, checked against the sha256 the manifest recorded."""
    key = runs.export_key(name)
    info = manifest.artifacts.get(name)
    if info is None or not run.exists(key):
        raise NotExportedError(
            f"run {run.ref.name} has no exported {name}; export it with: tthf-export --run {run.ref.run_id}"
        )
    data = run.read_bytes(key)
    if sha256(data) != info["sha256"]:
        raise StaleArtifactError(
            f"{run.store.uri(key)} does not match the sha256 in {runs.EXPORT_MANIFEST} (modified or partly copied?); "
            f"{_reexport(run)}"
        )
    return data


def open_fresh(run: runs.Run) -> Manifest:
    """The run's export manifest, checked against the run's current sources."""
    manifest = Manifest.read(run)
    check_fresh(run, manifest)
    return manifest

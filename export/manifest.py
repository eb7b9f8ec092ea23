"""``export/manifest.json``: what was exported from what, with which tools, and how well it matched.

It binds the artifacts to the run: the sha256 of the checkpoint, config and scalers they
were made from, and of every artifact file. ``check_fresh`` is what inference backends
call before loading anything: a manifest from another checkpoint (the run was retrained
after the export) or an artifact whose bytes changed is a ``StaleArtifactError`` that
says to re-export.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from dataclasses import dataclass, field
from typing import Any

from tthf.engine import runs
from tthf.errors import RunFormatError, StaleArtifactError

MANIFEST = f"{runs.EXPORT_DIR}/manifest.json"
FORMAT = 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_hashes(run: runs.Run) -> dict[str, str]:
    """sha256 of the run files an export depends on."""
    out = {}
    for key in (runs.CHECKPOINT, runs.CONFIG, runs.SCALERS):
        out[key] = sha256(run.read_bytes(key)) if run.exists(key) else ""
    return out


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
    for module in ("onnxruntime", "tensorrt"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return versions


@dataclass
class Manifest:
    run: str
    sources: dict[str, str]
    export_config: dict[str, Any]
    versions: dict[str, str | None]
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)  # {"built": bool, "reason"/"target", "command"}
    validation: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    format: int = FORMAT

    def add_artifact(self, name: str, data: bytes, **info: Any) -> None:
        self.artifacts[name] = {"sha256": sha256(data), "bytes": len(data), **info}

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    def write(self, run: runs.Run) -> None:
        run.write_text(MANIFEST, self.to_json())

    @classmethod
    def read(cls, run: runs.Run) -> "Manifest":
        where = run.store.uri(MANIFEST)
        if not run.exists(MANIFEST):
            raise StaleArtifactError(f"run {run.ref.name} has no {MANIFEST}; export it first: tthf-export --run {run.ref.run_id}")
        try:
            raw = json.loads(run.read_text(MANIFEST))
            manifest = cls(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise RunFormatError(f"{where} does not parse ({exc}); re-export: tthf-export --run {run.ref.run_id}") from exc
        if manifest.format != FORMAT:
            raise StaleArtifactError(
                f"{where} has format {manifest.format}, this tthf reads {FORMAT}; re-export: tthf-export --run {run.ref.run_id}"
            )
        return manifest



def check_fresh(run: runs.Run, manifest: Manifest) -> None:
    """Refuse an export made from another checkpoint, config or scalers than the run has now."""
    now = source_hashes(run)
    for key, was in manifest.sources.items():
        if now.get(key) != was:
            raise StaleArtifactError(
                f"the export of run {run.ref.name} is stale: {key} changed since it was exported "
                f"(sha256 {was[:12]}... at export, {now.get(key, '')[:12]}... now); "
                f"re-export with: tthf-export --run {run.ref.run_id}"
            )


def read_artifact(run: runs.Run, manifest: Manifest, name: str) -> bytes:
    """The bytes of ``export/{name}``, checked against the sha256 the manifest recorded."""
    key = f"{runs.EXPORT_DIR}/{name}"
    info = manifest.artifacts.get(name)
    if info is None or not run.exists(key):
        raise StaleArtifactError(f"run {run.ref.name} has no exported {name}; export it with: tthf-export --run {run.ref.run_id}")
    data = run.read_bytes(key)
    if sha256(data) != info["sha256"]:
        raise StaleArtifactError(
            f"{run.store.uri(key)} does not match the sha256 in {MANIFEST} (modified or partly copied?); "
            f"re-export with: tthf-export --run {run.ref.run_id}"
        )
    return data

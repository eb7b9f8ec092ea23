"""The user's files: read by URI, and the model opened without running its code unless a class is named.

- ONNX: the bytes, checked by ``onnx.checker`` (no code);
- ``.pt2``: ``torch.export.load`` (a program, no pickle, no user code);
- a state dict: ``.safetensors`` (no code) or ``.pt``/``.pth`` read with ``torch.load(weights_only=True)``
  (plain tensors and containers only: a file that needs full unpickling is refused with what to do),
  loaded into the class the spec names (``module:Class``, imported from ``code_path``; the only
  time user code runs, and only because the spec asks for it).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tthf.engine.store import open_store
from tthf.errors import KeyNotFoundError, ModelImportError
from tthf.export.importing.spec import ImportSpec


def read_uri(uri: str) -> bytes:
    """The bytes of a local path or an ``s3://`` object."""
    head, name = uri.rsplit("/", 1) if "/" in uri else (".", uri)
    try:
        return open_store(head or "/").read_bytes(name)
    except KeyNotFoundError as exc:
        raise ModelImportError(f"{uri}: no such file (paths in the spec are relative to the spec's folder)") from exc


@dataclass
class Source:
    """The opened model: ``onnx`` bytes for an ONNX file, else a torch module or ``ExportedProgram``."""

    format: str
    data: bytes
    model: Any = None  # torch.nn.Module | torch.export.ExportedProgram | None (ONNX)


def open_source(spec: ImportSpec) -> Source:
    data = read_uri(spec.model_path)
    if spec.model_format == "onnx":
        return Source("onnx", data)
    import torch

    if spec.model_format == "pt2":
        try:
            program = torch.export.load(io.BytesIO(data))
        except Exception as exc:  # torch raises many types for a file that is not a program
            raise ModelImportError(
                f"{spec.model_path}: not a torch.export program ({type(exc).__name__}: {exc}); save one with "
                "torch.export.save(torch.export.export(model, (x,), dynamic_shapes=...), 'model.pt2')"
            ) from exc
        _check_program_input(program, spec.model_path)
        return Source("pt2", data, program)
    return Source("state_dict", data, _module(spec, _state_dict(spec, data)))


def _check_program_input(program: Any, where: str) -> None:
    """One input, with a dynamic batch axis: tthf feeds batches of every size."""
    names = list(program.graph_signature.user_inputs)
    shapes = [n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in names]
    if len(shapes) != 1:
        raise ModelImportError(f"{where}: the program takes {len(shapes)} inputs; tthf feeds one (B, T, F) tensor")
    if isinstance(shapes[0][0], int):
        raise ModelImportError(
            f"{where}: the program's input has a fixed batch of {shapes[0][0]}; export it with a dynamic batch axis: "
            "torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))"
        )


def _state_dict(spec: ImportSpec, data: bytes) -> dict[str, Any]:
    import torch

    where = spec.model_path
    if where.endswith(".safetensors"):
        from safetensors.torch import load

        state: Any = load(data)
    else:
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError and friends: the file holds objects, not tensors
            raise ModelImportError(
                f"{where} needs full unpickling (it holds Python objects, not only tensors), which runs code from "
                "the file; tthf reads .pt files with torch.load(weights_only=True). Save the weights alone: "
                "torch.save(model.state_dict(), 'model.pt') or safetensors.torch.save_file(model.state_dict(), "
                f"'model.safetensors') ({type(exc).__name__})"
            ) from exc
    if spec.state_dict_key is not None:
        if not isinstance(state, dict) or spec.state_dict_key not in state:
            have = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ModelImportError(f"{where}: no entry {spec.state_dict_key!r} (model.state_dict_key); it has {have}")
        state = state[spec.state_dict_key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelImportError(
            f"{where}: not a state dict of tensors; if the weights are nested, name their entry with "
            'model.state_dict_key (e.g. "model_state_dict")'
        )
    return state


def _module(spec: ImportSpec, state: dict[str, Any]) -> Any:
    """The named class, built with ``kwargs`` and loaded strictly with ``state``."""
    assert spec.model_class is not None
    module_name, _, class_name = spec.model_class.partition(":")
    if not module_name or not class_name:
        raise ModelImportError(f"{spec.source}: model.class {spec.model_class!r} must be 'module:Class'")
    with _on_path(spec.code_path):
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ModelImportError(
                f"{spec.source}: cannot import model.class {spec.model_class!r} ({exc}); set model.code_path to "
                "the folder that holds the module"
            ) from exc
    try:
        model = cls(**spec.kwargs)
    except TypeError as exc:
        raise ModelImportError(f"{spec.source}: {spec.model_class}(**model.kwargs) failed: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelImportError(
            f"{spec.model_path} does not fit {spec.model_class}({spec.kwargs}): {' '.join(first)}; check "
            "model.kwargs and model.state_dict_key"
        ) from exc
    return model.eval()


@contextlib.contextmanager
def _on_path(folder: str | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    if not os.path.isdir(folder):
        raise ModelImportError(f"model.code_path {folder} is not a folder")
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)

"""The served graph: the user's model as ONNX, wrapped into tthf's interface with the output mapping.

The user's model keeps its own output names: a torch model's outputs are flattened with
their pytree paths as names (a dict's keys: ``returns``, ``volatility``, ``confidence``;
a tuple's indices ``0``, ``1``; a lone tensor ``output``), so nothing is matched by position
(torch.onnx relabels flattened dict outputs by position, pytorch/pytorch#165758; the names
here come from the same flattening and the import's validation compares them by value).
``wrap`` then appends, per tthf output, ``Gather(column)`` and the affine map
``value * scale + offset`` to the graph, so every backend and precision serves the map, and
makes the graph's only outputs ``ret_1h, vol_10m, ret_conf, vol_conf`` (B,) float32 with
the input ``features`` (batch, seq_len, n_features).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import BATCH_DIM, INPUT_NAME, Outputs
from tthf.errors import ModelImportError
from tthf.export.importing.sources import Source
from tthf.export.importing.spec import OutputMap
from tthf.export.onnx_export import MAX_TRACED_BATCH, quiet_exporters

#: the opset the torch sources are exported at (as tthf-export's default)
OPSET = 18
_PREFIX = "tthf_import"


def leaf_name(path: tuple[Any, ...]) -> str:
    """A pytree leaf's name: its keys joined with '.', ``output`` for a lone tensor."""
    parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
    return ".".join(parts) or "output"


def source_outputs(source: Source, x: np.ndarray) -> dict[str, np.ndarray]:
    """The user's model on ``x`` (B, seq_len, F): its outputs by name, as numpy (the import's reference)."""
    if source.format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(source.data, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        feeds = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        return dict(zip(names, session.run(None, feeds)))
    import torch
    from torch.utils._pytree import tree_flatten_with_path

    module = source.model.module() if isinstance(source.model, torch.export.ExportedProgram) else source.model
    try:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    except Exception as exc:  # the user's forward may raise anything on tthf's input shape
        raise ModelImportError(
            f"the {source.format} model fails on a batch of {x.shape} (batch, model.seq_len, len(features.names)): "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    leaves, _ = tree_flatten_with_path(out)
    return {leaf_name(path): leaf.detach().float().numpy() for path, leaf in leaves}


def raw_onnx(source: Source, seq_len: int, n_features: int, names: list[str]) -> onnx.ModelProto:
    """The user's model as ONNX with its own output ``names`` (a torch source is exported here)."""
    if source.format == "onnx":
        try:
            proto = onnx.load_from_string(source.data)
            onnx.checker.check_model(proto)
        except Exception as exc:  # DecodeError, ValidationError: the file is not a valid model
            raise ModelImportError(f"the ONNX model does not load or check: {type(exc).__name__}: {exc}") from exc
        return proto
    import torch

    example = (torch.zeros(2, seq_len, n_features),)
    program = source.model
    dynamic: Any = None
    if not isinstance(program, torch.export.ExportedProgram):
        dynamic = ({0: torch.export.Dim(BATCH_DIM, min=1, max=MAX_TRACED_BATCH)},)
    with contextlib.ExitStack() as stack, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(quiet_exporters())
        path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tthf-import-"))) / "model.onnx"
        try:
            onnx_program = torch.onnx.export(
                program,
                example,
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_shapes=dynamic,
                optimize=True,
            )
            assert onnx_program is not None
            onnx_program.save(str(path))
        except Exception as exc:  # the exporter raises many types; all mean the model does not export
            raise ModelImportError(
                f"torch.onnx.export of the {source.format} model failed: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        return onnx.load(str(path))


def check_outputs(outputs: dict[str, OutputMap], shapes: dict[str, tuple[int, ...]], batch: int) -> None:
    """Every mapped output and column exists in the model's real outputs (names and shapes, never positions)."""
    have = ", ".join(f"{n} {tuple(['B', *s[1:]])}" for n, s in shapes.items())
    for name, out in outputs.items():
        if out.output not in shapes:
            raise ModelImportError(f"outputs.{name}: the model has no output {out.output!r}; its outputs are {have}")
        shape = shapes[out.output]
        if not shape or shape[0] != batch or len(shape) > 2:
            raise ModelImportError(
                f"outputs.{name}: output {out.output!r} has shape {shape} for a batch of {batch}; tthf serves (B,) "
                "or (B, k) outputs"
            )
        width = shape[1] if len(shape) == 2 else 1
        if len(shape) == 2 and out.column is None:
            raise ModelImportError(f"outputs.{name}: output {out.output!r} is (B, {width}); give its column")
        if (out.column or 0) >= width:
            raise ModelImportError(
                f"outputs.{name}: column {out.column} but output {out.output!r} has {width} column(s) ({have})"
            )


def mapped(source: dict[str, np.ndarray], outputs: dict[str, OutputMap]) -> Outputs:
    """The tthf outputs from the model's, in float64: the import's reference for the served graph."""
    result = {}
    for name, out in outputs.items():
        value = np.asarray(source[out.output], dtype=np.float64)
        value = value[:, out.column] if value.ndim == 2 else value
        result[name] = value * out.scale + out.offset
    return result


def wrap(raw: onnx.ModelProto, outputs: dict[str, OutputMap], seq_len: int, n_features: int) -> onnx.ModelProto:
    """``raw`` with tthf's input name and the four mapped outputs as its only outputs."""
    model = onnx.ModelProto()
    model.CopyFrom(raw)
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelImportError(f"the ONNX model has inputs {[i.name for i in inputs]}; tthf feeds one (B, T, F) input")
    _check_input(inputs[0], seq_len, n_features)
    taken = _value_names(graph)
    renames = {inputs[0].name: INPUT_NAME} if inputs[0].name != INPUT_NAME else {}
    renames.update({n: f"{_PREFIX}.{n}" for n in OUTPUT_NAMES if n in taken})
    _rename(graph, renames)
    del graph.output[:]
    for name, out in outputs.items():
        value = renames.get(out.output, out.output)
        if out.column is not None:
            graph.initializer.append(
                numpy_helper.from_array(np.array(out.column, dtype=np.int64), f"{_PREFIX}.{name}.col")
            )
            graph.node.append(
                helper.make_node("Gather", [value, f"{_PREFIX}.{name}.col"], [f"{_PREFIX}.{name}.g"], axis=1)
            )
            value = f"{_PREFIX}.{name}.g"
        for op, const in (("Mul", out.scale), ("Add", out.offset)):
            if (op == "Mul" and const == 1.0) or (op == "Add" and const == 0.0):
                continue
            graph.initializer.append(
                numpy_helper.from_array(np.array(const, dtype=np.float32), f"{_PREFIX}.{name}.{op}")
            )
            graph.node.append(helper.make_node(op, [value, f"{_PREFIX}.{name}.{op}"], [f"{_PREFIX}.{name}.{op}.y"]))
            value = f"{_PREFIX}.{name}.{op}.y"
        graph.node.append(helper.make_node("Identity", [value], [name]))
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH_DIM]))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelImportError(f"the wrapped ONNX graph does not check: {exc}") from exc
    return model


def _check_input(value: onnx.ValueInfoProto, seq_len: int, n_features: int) -> None:
    tensor = value.type.tensor_type
    dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
    if tensor.elem_type != TensorProto.FLOAT or len(dims) != 3:
        raise ModelImportError(f"the model's input {value.name!r} must be float32 (B, T, F), got {dims}")
    if not isinstance(dims[0], str):
        raise ModelImportError(
            f"the model's input {value.name!r} has a fixed batch of {dims[0]}; export it with a dynamic batch axis "
            "(torch.export.Dim on axis 0)"
        )
    for got, want, what in ((dims[1], seq_len, "model.seq_len"), (dims[2], n_features, "len(features.names)")):
        if isinstance(got, int) and got != want:
            raise ModelImportError(f"the model's input {value.name!r} is {dims}, but {what} is {want}")
    tensor.shape.dim[0].dim_param = BATCH_DIM


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names |= {i.name for i in graph.initializer}
    for node in graph.node:
        names |= set(node.output)
    return names


def _rename(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    """Rename values throughout the top-level graph (inputs, node inputs and outputs, value infos)."""
    if not renames:
        return
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.value_info]:
        value.name = renames.get(value.name, value.name)

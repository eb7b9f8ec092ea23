"""PyTorch reference -> fp32 ONNX with a dynamic batch axis and named inputs/outputs.

One input ``features`` (batch, seq_len, n_features) float32 and the four outputs of
``OUTPUT_NAMES``, each (batch,). The default exporter is ``torch.onnx.export(dynamo=True)``
(docs/export.md, "Choice of exporter", has the measurement behind the choice); the
TorchScript-based exporter stays available with ``--exporter torchscript``.
Both emit LayerNormalization as one op (opset >= 17), checked here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import BATCH_DIM, INPUT_NAME
from tthf.errors import ExportError

log = logging.getLogger("tthf.export")

# Upper bound torch.export checks the batch symbol against; the ONNX axis stays symbolic.
MAX_TRACED_BATCH = 1 << 24
_CHATTY = ("onnxscript", "onnx_ir", "torch.onnx")


def export_onnx(model: torch.nn.Module, *, seq_len: int, n_features: int, exporter: str, opset: int) -> onnx.ModelProto:
    """Export ``model`` (in eval mode, on CPU) and check the result; errors are ``ExportError``."""
    model = model.eval().cpu()
    example = torch.zeros(2, seq_len, n_features, dtype=torch.float32)
    with contextlib.ExitStack() as stack, warnings.catch_warnings():
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tthf-onnx-"))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        # The exporters print progress and deprecation notes; the CLI reports its own progress.
        warnings.simplefilter("ignore")
        stack.enter_context(quiet_exporters())
        path = Path(tmp) / "model.onnx"
        try:
            if exporter == "dynamo":
                batch = torch.export.Dim(BATCH_DIM, min=1, max=MAX_TRACED_BATCH)
                program = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_shapes=({0: batch},),
                    optimize=True,
                )
                if program is None:
                    raise ExportError("torch.onnx.export (dynamo) returned no program")
                program.save(str(path))
            elif exporter == "torchscript":
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, **{n: {0: BATCH_DIM} for n in OUTPUT_NAMES}},
                )
            else:
                raise ExportError(f"unknown exporter {exporter!r}; use dynamo or torchscript")
        except ExportError:
            raise
        except Exception as exc:  # the exporters raise many types; all mean the same to the user
            raise ExportError(
                f"torch.onnx.export ({exporter}) failed: {type(exc).__name__}: {exc}; "
                f"try the other exporter with --exporter {'torchscript' if exporter == 'dynamo' else 'dynamo'}"
            ) from exc
        proto = onnx.load(str(path))  # loads external data, if the exporter wrote any, into the proto
    check_onnx(proto, seq_len=seq_len, n_features=n_features)
    return proto


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """The dynamo exporter logs every pass at INFO and warns about absent torchvision; failures raise anyway."""
    loggers = [logging.getLogger(n) for n in _CHATTY]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_onnx(proto: onnx.ModelProto, *, seq_len: int, n_features: int) -> None:
    """onnx.checker plus the interface contract: names, dtypes, a symbolic batch axis, one LayerNormalization op."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported model fails onnx.checker: {exc}") from exc
    graph = proto.graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise ExportError(
            f"exported inputs {inputs} / outputs {outputs}; expected [{INPUT_NAME!r}] / {list(OUTPUT_NAMES)}"
        )
    dims = graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_param or d.dim_value for d in dims]
    if len(shape) != 3 or not isinstance(shape[0], str) or shape[1:] != [seq_len, n_features]:
        raise ExportError(f"input {INPUT_NAME!r} has shape {shape}; expected [batch, {seq_len}, {n_features}]")
    for out in graph.output:
        odims = out.type.tensor_type.shape.dim
        if len(odims) != 1 or not odims[0].dim_param:
            raise ExportError(f"output {out.name!r} must be 1-D with a symbolic batch axis")
    if not any(n.op_type == "LayerNormalization" for n in graph.node):
        raise ExportError("the exported graph has no LayerNormalization op (decomposed?); use opset 17 or newer")

"""fp32 ONNX -> mixed-precision fp16 ONNX for strongly typed TensorRT engines.

TensorRT 11 removed the FP16 builder flag: a network's precision is the precision of
its ONNX tensors. This pass decides per node. A node runs in fp16 only when its op is
in ``FP16_OPS`` (matrix products, elementwise arithmetic, GELU's erf, layout ops) AND
it feeds a later matrix product. Everything else stays fp32:

- LayerNormalization, Softmax and reductions (their statistics overflow or lose
  digits in fp16);
- the heads' output tails (exp of the log-vol, erf of the confidence, clips and
  scalings after the last matrix product), so every output is computed in fp32 from
  the fp16 matrix product before it;
- the graph inputs and outputs (float32), so callers never see half precision.

Casts go in on the edges where a tensor's precision changes; one Cast per tensor and
target type is shared by all consumers. Float initializers used by fp16 nodes get an
fp16 copy (clipped to the fp16 range; the clip count is logged).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tthf.errors import ExportError

log = logging.getLogger("tthf.export")

FP16_OPS = frozenset(
    {
        "MatMul",
        "Gemm",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Neg",
        "Erf",
        "Relu",
        "Tanh",
        "Sigmoid",
        "Reshape",
        "Transpose",
        "Gather",
        "Concat",
        "Squeeze",
        "Unsqueeze",
        "Slice",
        "Flatten",
        "Identity",
    }
)
MATMUL_OPS = frozenset({"MatMul", "Gemm"})
FP16_MAX = float(np.finfo(np.float16).max)
_FLOAT, _HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def half_nodes(graph: onnx.GraphProto, fp32_ops: frozenset[str] = frozenset()) -> set[int]:
    """Indices of the nodes that run in fp16 (see the module docstring for the rule); ``fp32_ops`` stay fp32."""
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].append(i)
    feeds_matmul = [False] * len(graph.node)
    for i in reversed(range(len(graph.node))):  # nodes are topologically sorted (onnx.checker)
        feeds_matmul[i] = any(
            graph.node[j].op_type in MATMUL_OPS or feeds_matmul[j]
            for out in graph.node[i].output
            for j in consumers.get(out, ())
        )
    return {
        i
        for i, node in enumerate(graph.node)
        if node.op_type in FP16_OPS - fp32_ops and (node.op_type in MATMUL_OPS or feeds_matmul[i])
    }


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {init.name: init.data_type for init in g.initializer}
    for vi in [*g.input, *g.value_info, *g.output]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _check_straight_line(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(
                f"node {node.name or node.op_type} has a subgraph ({node.op_type}); the fp16 pass handles "
                "straight-line graphs only, export the model without control flow"
            )


def _rename_half_outputs(
    nodes: list[onnx.NodeProto], half: set[int], types: dict[str, int], graph_outputs: set[str]
) -> dict[str, str]:
    """Graph outputs produced in fp16 get a ``__fp16`` name, so the final Cast to float32 keeps the original."""
    renamed = {}
    for i in half:
        for k, out in enumerate(nodes[i].output):
            if out in graph_outputs and types.get(out) == _FLOAT:
                renamed[out] = f"{out}__fp16"
                nodes[i].output[k] = renamed[out]
    for node in nodes:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
    return renamed


class _Rewrite:
    """The new node list: each node's float inputs in the precision it computes in, Casts added once per value."""

    def __init__(self, inits: dict[str, TensorProto], is_float: Callable[[str], bool]) -> None:
        self.inits = inits
        self.is_float = is_float
        self.is_half: set[str] = set()
        self.half_inits: dict[str, TensorProto] = {}
        self.casts: dict[tuple[str, int], str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.clipped = 0

    def cast(self, name: str, to: int) -> str:
        key = (name, to)
        if key not in self.casts:
            self.casts[key] = f"{name}__to_{'fp16' if to == _HALF else 'fp32'}"
            self.nodes.append(
                helper.make_node("Cast", [name], [self.casts[key]], to=to, name=f"Cast_{self.casts[key]}")
            )
        return self.casts[key]

    def half_initializer(self, name: str) -> str:
        """An fp16 copy of a weight (clipped to the fp16 range, counted)."""
        if name not in self.half_inits:
            arr = numpy_helper.to_array(self.inits[name])
            self.clipped += int(np.count_nonzero(np.abs(arr) > FP16_MAX))
            self.half_inits[name] = numpy_helper.from_array(
                np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16), f"{name}__fp16"
            )
        return self.half_inits[name].name

    def add(self, node: onnx.NodeProto, want: int) -> None:
        for k, name in enumerate(node.input):
            if not name or not self.is_float(name):
                continue
            if name in self.inits and want == _HALF:
                node.input[k] = self.half_initializer(name)
                continue
            have = _HALF if name in self.is_half else _FLOAT
            if have != want:
                node.input[k] = self.cast(name, want)
        self.nodes.append(node)
        if want == _HALF:
            self.is_half.update(o for o in node.output if self.is_float(o))


def _assemble(model: onnx.ModelProto, rewrite: _Rewrite) -> onnx.ModelProto:
    """The rewritten nodes as a checked model with the source's I/O, opsets and metadata."""
    src = model.graph
    used = {name for node in rewrite.nodes for name in node.input}
    graph = helper.make_graph(
        rewrite.nodes,
        src.name,
        list(src.input),
        list(src.output),
        initializer=[t for t in src.initializer if t.name in used]
        + [t for t in rewrite.half_inits.values() if t.name in used],
    )
    result = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="tthf.export.fp16")
    result.ir_version = model.ir_version
    for prop in model.metadata_props:
        result.metadata_props.add().CopyFrom(prop)
    try:
        onnx.checker.check_model(result, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the fp16 model fails onnx.checker ({exc}); report this with the fp32 model.onnx") from exc
    return result


#: what an imported graph keeps in fp32 besides the rule: ONNX Runtime 1.32's CPU session crashes
#: (MatmulTransposeFusion, ORT_ENABLE_ALL) on an fp16 Transpose feeding a MatMul with a weight, the
#: pattern torch exports for nn.MultiheadAttention with batch_first; tthf's own graph has none
IMPORTED_FP32_OPS = frozenset({"Transpose"})


def convert_to_fp16(model: onnx.ModelProto, *, fp32_ops: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """A new model: fp16 where safe, fp32 where it must be (and for ``fp32_ops``), float32 inputs and outputs."""
    src = model.graph
    _check_straight_line(src)
    types = _float_types(model)
    half = half_nodes(src, fp32_ops)
    nodes = [onnx.NodeProto() for _ in src.node]
    for new, old in zip(nodes, src.node):
        new.CopyFrom(old)
    renamed = _rename_half_outputs(nodes, half, types, {o.name for o in src.output})
    original_of = {new: old for old, new in renamed.items()}
    rewrite = _Rewrite(
        {init.name: init for init in src.initializer}, lambda name: types.get(original_of.get(name, name)) == _FLOAT
    )
    for i, node in enumerate(nodes):
        rewrite.add(node, _HALF if i in half else _FLOAT)
    for original, fp16_name in renamed.items():
        rewrite.nodes.append(helper.make_node("Cast", [fp16_name], [original], to=_FLOAT, name=f"Cast_{original}"))
    if rewrite.clipped:
        log.warning("fp16: %d weight value(s) beyond +-%.0f were clipped to the fp16 range", rewrite.clipped, FP16_MAX)
    return _assemble(model, rewrite)


def precision_summary(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes compute in each precision, and how many Casts were added (for the manifest)."""
    types = _float_types(model)
    counts = {"fp16_nodes": 0, "fp32_nodes": 0, "casts": 0}
    for node in model.graph.node:
        if node.op_type == "Cast":
            counts["casts"] += 1
            continue
        out_types = {types.get(o) for o in node.output}
        if _HALF in out_types:
            counts["fp16_nodes"] += 1
        elif _FLOAT in out_types:
            counts["fp32_nodes"] += 1
    return counts

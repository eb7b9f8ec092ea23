"""The served graph: the model's outputs by name, Gather of the column, the affine map, tthf's names."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tthf.engine.config import ModelConfig
from tthf.engine.model.interface import InputSet
from tthf.engine.runtime.backends import OnnxRuntimeBackend
from tthf.errors import ValidationError
from tthf.export.importing import validate
from tthf.export.importing.graph import check_outputs, mapped, wrap
from tthf.export.importing.sources import Source
from tthf.export.importing.spec import OutputMap
from tthf.export.validate import enforce

T, F = 4, 3


def toy(weight: float = 1.0) -> onnx.ModelProto:
    """x (B, T, F) -> 'a' (B, 2) = sum over T of x[..., :2] * weight, and 'ret_1h' (B,) = sum of x (a name clash)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", T, F])
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes1"], ["s"], keepdims=0),
        helper.make_node("Slice", ["s", "starts", "ends", "axes_last"], ["s2"]),
        helper.make_node("Mul", ["s2", "w"], ["a"]),
        helper.make_node("ReduceSum", ["s", "axes_last"], ["ret_1h"], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "axes1"),
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([2], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes_last"),
        numpy_helper.from_array(np.array(weight, np.float32), "w"),
    ]
    outs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2]),
        helper.make_tensor_value_info("ret_1h", TensorProto.FLOAT, ["n"]),
    ]
    graph = helper.make_graph(nodes, "toy", [x], outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


OUTPUTS = {
    "ret_1h": OutputMap("ret_1h", None, scale=0.5, offset=1.0),  # the model's own 'ret_1h' (B,), renamed inside
    "vol_10m": OutputMap("a", 1, scale=2e-3, offset=1e-3),
    "ret_conf": OutputMap("a", 0),
    "vol_conf": OutputMap("a", 1),
}


def test_wrap_serves_the_mapping_under_tthfs_names() -> None:
    served = wrap(toy(), OUTPUTS, T, F)
    assert [i.name for i in served.graph.input] == ["features"]
    assert [o.name for o in served.graph.output] == ["ret_1h", "vol_10m", "ret_conf", "vol_conf"]
    x = np.random.default_rng(0).standard_normal((5, T, F)).astype(np.float32)
    got = OnnxRuntimeBackend.from_onnx(served.SerializeToString()).predict(x)
    s = x.astype(np.float64).sum(axis=1)
    want = mapped({"a": s[:, :2], "ret_1h": s.sum(axis=1)}, OUTPUTS)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6)


def test_outputs_are_checked_against_the_real_names_and_shapes() -> None:
    shapes = {"a": (3, 2), "ret_1h": (3,)}
    check_outputs(OUTPUTS, shapes, 3)
    from tthf.errors import ModelImportError

    with pytest.raises(ModelImportError, match="column 2 but output 'a' has 2"):
        check_outputs({**OUTPUTS, "vol_conf": OutputMap("a", 2)}, shapes, 3)
    with pytest.raises(ModelImportError, match="no output 'b'; its outputs are a"):
        check_outputs({**OUTPUTS, "vol_conf": OutputMap("b", 0)}, shapes, 3)


def test_validation_catches_a_served_graph_that_is_not_the_source() -> None:
    """The detector: the same graph passes; one with a weight off by 1e-3 fails the fp32 bar."""
    source = Source("onnx", toy().SerializeToString())
    x = np.random.default_rng(1).standard_normal((64, T, F)).astype(np.float32)
    sets = [InputSet("random@64", x)]
    model = ModelConfig(n_features=F, seq_len=T, ret_scale=0.5, vol_scale=2e-3)
    enforce(validate(source, wrap(toy(), OUTPUTS, T, F).SerializeToString(), OUTPUTS, sets, model))
    off = wrap(toy(weight=1.001), OUTPUTS, T, F).SerializeToString()
    with pytest.raises(ValidationError, match="vol_10m"):
        enforce(validate(source, off, OUTPUTS, sets, model))

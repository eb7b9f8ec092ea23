"""The reference model: shapes, ranges, the confidence formula, checkpoints, ONNX export."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from tthf.engine.config import ModelConfig
from tthf.engine.model.network import ThreeHeadedTransformer, load_checkpoint, recording_attention, save_checkpoint
from tthf.errors import RunFormatError

CFG = ModelConfig(
    n_features=7,
    d_model=16,
    n_heads=2,
    n_layers=2,
    d_ff=32,
    dropout=0.1,
    ret_scale=2e-3,
    vol_scale=1e-3,
    ret_band=1.5e-3,
)


def make_model(seed: int = 0, cfg: ModelConfig = CFG) -> ThreeHeadedTransformer:
    torch.manual_seed(seed)
    return ThreeHeadedTransformer(cfg).eval()


def features(batch: int, seed: int = 1, cfg: ModelConfig = CFG) -> torch.Tensor:
    return torch.randn(batch, cfg.seq_len, cfg.n_features, generator=torch.Generator().manual_seed(seed))


def test_output_shapes_and_ranges() -> None:
    model = make_model()
    x = features(64) * 5  # large inputs push the heads to their extremes
    with torch.no_grad():
        ret, vol, ret_conf, vol_conf = model(x)
    for out in (ret, vol, ret_conf, vol_conf):
        assert out.shape == (64,) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
    assert (vol > 0).all()
    assert ((ret_conf >= 0) & (ret_conf <= 1)).all() and ((vol_conf >= 0) & (vol_conf <= 1)).all()


def test_outputs_follow_the_train_heads() -> None:
    """forward() is forward_train() mapped to natural units with the documented formulas."""
    model = make_model()
    x = features(16)
    with torch.no_grad():
        ret, vol, ret_conf, vol_conf = model(x)
        raw = model.forward_train(x)
    torch.testing.assert_close(ret, raw.ret_mu * CFG.ret_scale)
    torch.testing.assert_close(vol, torch.exp(raw.logvol_mu) * CFG.vol_scale)
    sigma_ret = torch.exp(raw.ret_log_sigma) * CFG.ret_scale
    torch.testing.assert_close(ret_conf, torch.erf(CFG.ret_band / (sigma_ret * math.sqrt(2))))
    torch.testing.assert_close(vol_conf, torch.erf(CFG.vol_band / (torch.exp(raw.vol_log_sigma) * math.sqrt(2))))


def test_rows_are_independent_of_the_batch() -> None:
    model = make_model()
    x = features(10)
    with torch.no_grad():
        full = torch.stack(model(x), 1)
        one = torch.stack(model(x[3:4]), 1)
    torch.testing.assert_close(full[3:4], one, rtol=1e-5, atol=1e-7)


def test_same_seed_same_model_and_dropout_only_in_training() -> None:
    x = features(8)
    a, b = make_model(3), make_model(3)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    with torch.no_grad():
        assert all(torch.equal(u, v) for u, v in zip(a(x), a(x)))
        a.train()
        assert not torch.equal(a(x)[0], a(x)[0])


def test_checkpoint_round_trip_is_exact_and_pickle_free() -> None:
    model = make_model()
    data = save_checkpoint(model)
    assert data[8:9] == b"{"  # safetensors: u64 header length, then a JSON header; no pickle opcodes
    assert b"\x80\x04" not in data[:16]
    loaded = load_checkpoint(data, CFG)
    assert not loaded.training
    x = features(5)
    with torch.no_grad():
        for u, v in zip(model(x), loaded(x)):
            assert torch.equal(u, v)


def test_checkpoint_shape_mismatch_names_the_tensor() -> None:
    data = save_checkpoint(make_model())
    with pytest.raises(RunFormatError, match=r"input_proj\.weight.*\(16, 7\).*\(16, 9\)"):
        load_checkpoint(data, dataclasses.replace(CFG, n_features=9))


def test_checkpoint_missing_and_unexpected_tensors_are_named() -> None:
    deeper = dataclasses.replace(CFG, n_layers=3)
    with pytest.raises(RunFormatError, match=r"missing \['layers\.2\."):
        load_checkpoint(save_checkpoint(make_model()), deeper)
    state = {k: v.clone() for k, v in make_model().state_dict().items()}
    state["extra.weight"] = torch.zeros(2)
    with pytest.raises(RunFormatError, match=r"unexpected \['extra\.weight'\]"):
        load_checkpoint(st_save(state), CFG)


def test_checkpoint_dtype_mismatch_and_garbage() -> None:
    state = {k: v.double() for k, v in make_model().state_dict().items()}
    with pytest.raises(RunFormatError, match="float64"):
        load_checkpoint(st_save(state), CFG)
    with pytest.raises(RunFormatError, match="not a readable safetensors file"):
        load_checkpoint(b"\x80\x04not a checkpoint", CFG, source="run/checkpoint.safetensors")


def _export(model: ThreeHeadedTransformer, path) -> None:
    """The legacy (TorchScript) exporter at opset 17, batch axis dynamic."""
    torch.onnx.export(
        model,
        (features(4),),
        str(path),
        input_names=["features"],
        output_names=["ret_1h", "vol_10m", "ret_conf", "vol_conf"],
        dynamic_axes={"features": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_opset17_matches_onnxruntime(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = make_model()
    path = tmp_path / "model.onnx"
    _export(model, path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {op.domain: op.version for op in proto.opset_import}[""] == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = features(33, seed=9)
    got = session.run(None, {"features": x.numpy()})
    with torch.no_grad():
        want = model(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-6)


def test_recording_attention_returns_softmax_rows_and_changes_no_output() -> None:
    model, x = make_model(), features(5)
    with torch.no_grad():
        plain = model(x)
        with recording_attention(model) as records:
            recorded = model(x)
        after = model(x)
    assert all(torch.equal(a, b) for a, b in zip(plain, recorded)) and all(
        torch.equal(a, b) for a, b in zip(plain, after)
    )
    assert [len(r) for r in records] == [1] * CFG.n_layers
    att = records[0][0]
    assert att.shape == (5, CFG.n_heads, CFG.seq_len, CFG.seq_len)
    torch.testing.assert_close(att.sum(-1), torch.ones(5, CFG.n_heads, CFG.seq_len))
    assert all(layer.attention is None for layer in model.layers)  # off again outside the block


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_attention_option_leaves_the_exported_graph_unchanged(tmp_path) -> None:
    """The option lives outside the traced graph: the export after a recording is byte for byte the one before."""
    pytest.importorskip("onnx")
    model = make_model()
    _export(model, tmp_path / "before.onnx")
    with torch.no_grad(), recording_attention(model):
        model(features(3))
    _export(model, tmp_path / "after.onnx")
    assert (tmp_path / "after.onnx").read_bytes() == (tmp_path / "before.onnx").read_bytes()

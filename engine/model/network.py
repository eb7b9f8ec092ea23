"""The PyTorch reference model: a small pre-LN transformer with three heads.

Every op is written out (Linear, softmax attention, GELU, LayerNorm, erf) with static
shapes apart from the batch, so the same graph exports to ONNX opset 17 and TensorRT
without the fused fast path of ``nn.TransformerEncoder``. The exported graph maps
scaled features straight to forecasts in natural units (docs/model.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from tthf.engine.config import ModelConfig
from tthf.errors import RunFormatError

# Bounds on the predicted log-sigma (in target units): keeps the NLL finite early in
# training and the confidence strictly inside (0, 1) in float32.
LOG_SIGMA_MIN = -6.0
LOG_SIGMA_MAX = 4.0
# Realized 10-minute volatility is exactly 0 when the mid did not move; the log-vol
# training target and the vol metrics floor it at this fraction of vol_scale.
VOL_FLOOR_FRACTION = 0.01


def vol_floor(cfg: ModelConfig) -> float:
    return VOL_FLOOR_FRACTION * cfg.vol_scale


class TrainOutputs(NamedTuple):
    """Raw heads in training units: ret / ret_scale and log(vol / vol_scale)."""

    ret_mu: Tensor
    logvol_mu: Tensor
    ret_log_sigma: Tensor
    vol_log_sigma: Tensor


class EncoderLayer(nn.Module):
    """Pre-LN encoder layer: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)
        # None except inside ``recording_attention``: the traced and exported graph never sees it
        self.attention: list[Tensor] | None = None

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.n_heads, self.d_head).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = self._heads(self.q(h)), self._heads(self.k(h)), self._heads(self.v(h))
        att = torch.softmax(q @ k.transpose(-2, -1) * (1.0 / math.sqrt(self.d_head)), dim=-1)
        if self.attention is not None:
            self.attention.append(att.detach())
        h = (att @ v).transpose(1, 2).reshape(b, t, d)  # no dropout on (B, H, T, T): costly on CPU
        x = x + self.drop(self.out(h))
        h = self.ff2(self.drop(nn.functional.gelu(self.ff1(self.ln2(x)))))
        return x + self.drop(h)


def _head(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class ThreeHeadedTransformer(nn.Module):
    """30 minutes of scaled features -> ret_1h, vol_10m, ret_conf, vol_conf, each (B,)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.input_proj = nn.Linear(cfg.n_features, d)
        self.pos = nn.Parameter(torch.zeros(cfg.seq_len, d))
        nn.init.normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(EncoderLayer(d, cfg.n_heads, cfg.d_ff, cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d)
        # Pooled representation: the last minute (most recent state) and the window mean.
        self.ret_head = _head(2 * d, d, 1)
        self.vol_head = _head(2 * d, d, 1)
        self.conf_head = _head(2 * d, d, 2)

    def forward_train(self, features: Tensor) -> TrainOutputs:
        x = self.drop(self.input_proj(features) + self.pos)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        # sum * (1/T) rather than mean: opset-18 ReduceMean takes its axes as an input, which
        # the dynamo exporter cannot convert back down to opset 17; ReduceSum converts cleanly.
        pooled = torch.cat([x[:, -1, :], x.sum(dim=1) * (1.0 / self.cfg.seq_len)], dim=-1)
        log_sigma = torch.clamp(self.conf_head(pooled), LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        return TrainOutputs(
            self.ret_head(pooled)[:, 0],
            self.vol_head(pooled)[:, 0],
            log_sigma[:, 0],
            log_sigma[:, 1],
        )

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cfg = self.cfg
        out = self.forward_train(features)
        ret_1h = out.ret_mu * cfg.ret_scale
        vol_10m = torch.exp(out.logvol_mu) * cfg.vol_scale
        # sigma of ret in natural units is exp(log_sigma) * ret_scale; log-vol has no scale.
        ret_conf = torch.erf(cfg.ret_band / (cfg.ret_scale * math.sqrt(2.0)) * torch.exp(-out.ret_log_sigma))
        vol_conf = torch.erf(cfg.vol_band / math.sqrt(2.0) * torch.exp(-out.vol_log_sigma))
        return ret_1h, vol_10m, ret_conf, vol_conf


@contextmanager
def recording_attention(model: ThreeHeadedTransformer) -> Iterator[list[list[Tensor]]]:
    """Inside the block every forward pass also records each layer's attention weights.

    Yields one list per layer, which receives a (B, heads, T, T) tensor (query, key) per
    forward pass. Outside the block the layers record nothing, so the model, its outputs
    and its exported graph are exactly those without this option.
    """
    layers = [cast(EncoderLayer, layer) for layer in model.layers]
    records: list[list[Tensor]] = [[] for _ in layers]
    for layer, record in zip(layers, records, strict=True):
        layer.attention = record
    try:
        yield records
    finally:
        for layer in layers:
            layer.attention = None


def save_checkpoint(model: ThreeHeadedTransformer) -> bytes:
    """Weights as safetensors bytes: plain tensors, loadable without executing code."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return st_save(state, metadata={"format": "tthf.three_headed_transformer"})


def load_checkpoint(data: bytes, cfg: ModelConfig, source: str = "checkpoint.safetensors") -> ThreeHeadedTransformer:
    """Build the model for ``cfg`` and load ``data``; any name or shape mismatch is named."""
    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise RunFormatError(
            f"{source}: not a readable safetensors file ({exc}); re-create the run with tthf-train"
        ) from exc
    model = ThreeHeadedTransformer(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise RunFormatError(
            f"{source}: tensors do not match config.json's model "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}); "
            "the checkpoint belongs to another run or tthf version, re-create the run with tthf-train"
        )
    for name, tensor in expected.items():
        got = state[name]
        if got.shape != tensor.shape or got.dtype != tensor.dtype:
            raise RunFormatError(
                f"{source}: tensor {name!r} is {got.dtype} {tuple(got.shape)} but config.json's model needs "
                f"{tensor.dtype} {tuple(tensor.shape)}; the checkpoint and config.json come from different runs, "
                "re-create the run with tthf-train"
            )
    model.load_state_dict(state)
    model.eval()
    return model

"""A user's own network, as their training pipeline writes it: not tthf's class, names or outputs.

``nn.TransformerEncoder`` with sinusoidal positions, a ``feature_embedding`` and three heads;
``forward`` returns a dict ``returns (B, 1)``, ``volatility (B, 1)`` (Softplus) and
``confidence (B, 2)`` (Sigmoid), all in target-scaled units. The tests import it only where a
spec names it (``class = "hfmodel:ThreeHeadedTransformer"``), as ``tthf-import`` does.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalPositions(nn.Module):
    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(pos * div)
        table[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]]


class ThreeHeadedTransformer(nn.Module):
    def __init__(
        self,
        input_dim: int,
        d_model: int = 24,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 48,
        head_hidden: int = 16,
        max_len: int = 64,
    ) -> None:
        super().__init__()
        self.feature_embedding = nn.Linear(input_dim, d_model)
        self.positions = SinusoidalPositions(d_model, max_len)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.return_head = nn.Sequential(nn.Linear(d_model, head_hidden), nn.GELU(), nn.Linear(head_hidden, 1))
        self.volatility_head = nn.Sequential(
            nn.Linear(d_model, head_hidden), nn.GELU(), nn.Linear(head_hidden, 1), nn.Softplus()
        )
        self.confidence_head = nn.Sequential(
            nn.Linear(d_model, head_hidden), nn.GELU(), nn.Linear(head_hidden, 2), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.encoder(self.positions(self.feature_embedding(x)))
        last = h[:, -1]
        return {
            "returns": self.return_head(last),
            "volatility": self.volatility_head(last),
            "confidence": self.confidence_head(last),
        }

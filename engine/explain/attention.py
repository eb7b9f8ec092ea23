"""Where tthf's transformer attends: the mean attention weight per layer, head and lag on a set of windows.

Two views of each (layer, head): ``from_last``, the weights of the forecast minute's query
(the last row, which the heads read directly) over the 30 keys, and ``all_queries``, the
weights averaged over every query row. Keys are reported by lag (lag 0 = the forecast
minute), beside the lag importance. Only tthf's own network can return its weights
(``recording_attention``); for other models the section says why it is absent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tthf.engine.model.network import ThreeHeadedTransformer, recording_attention

CHUNK = 1024


def mean_attention(model: ThreeHeadedTransformer, x: np.ndarray) -> dict[str, Any]:
    """``from_last`` and ``all_queries``: [layer][head][lag] mean weights over the windows ``x`` (N, T, F)."""
    import torch

    n_layers, n_heads, t = len(model.layers), model.cfg.n_heads, model.cfg.seq_len
    last = np.zeros((n_layers, n_heads, t))
    every = np.zeros((n_layers, n_heads, t))
    with torch.inference_mode(), recording_attention(model) as records:
        for lo in range(0, len(x), CHUNK):
            model(torch.from_numpy(np.ascontiguousarray(x[lo : lo + CHUNK])))
            for i, record in enumerate(records):
                att = record.pop().double()  # (B, H, T query, T key)
                last[i] += att[:, :, -1, :].sum(0).numpy()
                every[i] += att.mean(2).sum(0).numpy()
    lag_order = slice(None, None, -1)  # key T-1 is lag 0
    return {
        "from_last": (last[:, :, lag_order] / len(x)).tolist(),
        "all_queries": (every[:, :, lag_order] / len(x)).tolist(),
        "n_windows": len(x),
    }

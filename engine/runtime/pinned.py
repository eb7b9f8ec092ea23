"""Pinned host and device buffers for a GPU engine: the one buffer set that every GPU path moves batches through.

A batch goes host -> pinned host input -> device input (async upload), the engine writes
the device outputs, and they come back into pinned host outputs (async download): pinned
memory is what makes both copies asynchronous DMA instead of blocking copies from pageable
memory. Three users, one type:

- the CUDA runner's ring (``tthf.engine.runtime.runner``): one ``PinnedBuffers`` per slot;
- real time's fixed batch on TensorRT (``TensorRTFixedBatch``): one, at fixed addresses, so
  a CUDA graph can be captured over them;
- ``predict`` of a GPU backend (``PinnedPredict``): one, grown to the largest batch.

The inputs start as zeros, so rows past a batch (a fixed batch runs all its rows) are finite.
Outputs stay in the engine's dtypes on the device and in the pinned copies; ``outputs``
returns them as new float32 host arrays (fp16 -> fp32 is exact).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tthf.engine.model.interface import Outputs

#: how an engine runs a batch in device memory: ``execute(x_dev (n, seq, F), outs_dev {name: (n,)}, n, stream)``,
#: enqueued on ``stream`` (``DeviceEngine.execute``)
Execute = Callable[[Any, dict[str, Any], int, Any], None]


class PinnedBuffers:
    """Room for ``capacity`` windows of ``window_shape``: pinned host input, device input, device
    outputs ({name: torch dtype}) and pinned host outputs, allocated once."""

    def __init__(self, capacity: int, window_shape: tuple[int, ...], out_dtypes: dict[str, Any]) -> None:
        import torch

        shape = (capacity, *window_shape)
        self.capacity, self.window_shape = capacity, window_shape
        self.host_in = torch.zeros(shape, dtype=torch.float32, pin_memory=True)
        self.dev_in = torch.zeros(shape, dtype=torch.float32, device="cuda")
        self.dev_out = {name: torch.empty(capacity, dtype=d, device="cuda") for name, d in out_dtypes.items()}
        self.host_out = {name: torch.empty(capacity, dtype=d, pin_memory=True) for name, d in out_dtypes.items()}

    def upload(self, n: int) -> None:
        """Enqueue the copy of the first ``n`` input rows to the device, on the current stream."""
        self.dev_in[:n].copy_(self.host_in[:n], non_blocking=True)

    def download(self, n: int) -> None:
        """Enqueue the copy of the first ``n`` outputs back to pinned host memory, on the current stream."""
        for name, tensor in self.dev_out.items():
            self.host_out[name][:n].copy_(tensor[:n], non_blocking=True)

    def outputs(self, n: int) -> Outputs:
        """The first ``n`` downloaded outputs as new float32 arrays (call after the download has finished)."""
        return {name: tensor[:n].numpy().astype(np.float32) for name, tensor in self.host_out.items()}


class PinnedPredict:
    """``predict`` for an engine that runs batches in device memory: host batches through one ``PinnedBuffers``.

    ``predict`` serves the real-time predictor and export validation, which call it with
    small batches many times: a fresh device allocation and an extra synchronization per
    call would cost more than the model (finding 15 in docs/gpu-audit-status.md). So the
    buffers are grown to the largest batch and then reused, and per call this does one copy
    into pinned memory, an async upload, the engine's ``execute`` and an async download, all
    on one stream, and one synchronization.
    """

    def __init__(self, execute: Execute, out_dtypes: dict[str, Any], stream: Any) -> None:
        self.execute, self.out_dtypes, self.stream = execute, out_dtypes, stream
        self.buffers: PinnedBuffers | None = None

    def _room(self, n: int, window_shape: tuple[int, ...]) -> PinnedBuffers:
        """Buffers for ``n`` windows of ``window_shape``: the current ones, or larger ones (or of the new shape)."""
        held = self.buffers
        if held is not None and n <= held.capacity and window_shape == held.window_shape:
            return held
        grown = held.capacity if held is not None and window_shape == held.window_shape else 0
        self.buffers = held = None  # the old set is freed before the new one is allocated
        self.buffers = PinnedBuffers(max(n, grown, 1), window_shape, self.out_dtypes)
        return self.buffers

    def __call__(self, chunk: np.ndarray) -> Outputs:
        """``chunk`` (n, seq_len, F) through ``execute`` on the stream; returns host copies of the outputs."""
        import torch

        n = len(chunk)
        buffers = self._room(n, tuple(chunk.shape[1:]))
        buffers.host_in[:n].numpy()[...] = chunk
        with torch.cuda.stream(self.stream):
            buffers.upload(n)
            self.execute(buffers.dev_in, buffers.dev_out, n, self.stream)
            buffers.download(n)
        self.stream.synchronize()
        return buffers.outputs(n)

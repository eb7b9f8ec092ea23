"""Where a day's windows meet the backend: host buffers on CPU, a pinned ring on CUDA.

``make_runner`` picks the runner once per run; both have ``run(scaled, mask, stride)``
that returns every valid window's four outputs in cursor order.

- ``HostRunner`` (CPU backends): one ordinary buffer allocated once; the C++ kernel
  writes each batch straight into it and the backend reads it.
- ``CudaRunner`` (a backend on a GPU): a ring of ``slots`` pinned host buffers, device
  input / output buffers and pinned output buffers, all allocated once per run. Per batch
  the kernel writes the windows into the next free pinned buffer, an async H2D copy runs
  on the copy stream, the engine runs on the compute stream after an event, the D2H copy
  of the outputs goes back on the copy stream after another event, and the slot is read
  back only when it comes round again, so cutting batch ``i+1`` overlaps the copy and
  execution of batch ``i``. No allocation per batch (beyond what a PyTorch forward does).

  ``windowing="device"`` uploads the day's scaled (S, M, F) grid once and cuts windows on
  the GPU with ``index_select`` into the device input buffer; ``"host"`` cuts them on the
  CPU and uploads each window; ``"auto"`` uploads the grid when it is fewer bytes than the
  windows (dense mode: about ``seq_len`` times fewer) and fits in a quarter of free memory.

Each backend says how it runs a batch in device memory (``Backend.device_engine``):
TensorRT through tensor addresses and ``execute_async_v3`` on the compute stream; ONNX
Runtime through I/O binding of the device buffers, on the stream its session was created
with (``DeviceEngine.stream``, which then is the runner's compute stream; no host
synchronization per batch); PyTorch under fp16 autocast.

With ``timing=True`` the ring records a pair of CUDA timing events around every upload,
gather, engine run and download, and ``stage_times()`` gives them as intervals on the GPU's
clock; ``bench/intervals.py`` says how much of that work ran concurrently (``bench/gpu_overlap.py``
reports it in ``bench/GPU_RESULTS.md``). Off by default: events cost a little per batch.

Device windowing copies the grid through a pinned host buffer kept by the runner (grown to
the largest day), so the upload is an asynchronous DMA on the copy stream rather than a
blocking copy from pageable memory (finding 17 in docs/gpu-audit-status.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tthf.engine import windows
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import empty_outputs
from tthf.engine.runtime.backends.base import Backend, DeviceEngine
from tthf.engine.runtime.pinned import PinnedBuffers
from tthf.errors import UsageError

WINDOWING = ("auto", "host", "device")
#: pinned buffers in the ring: one being cut, one copying / running, one being read back
RING_SLOTS = 3
#: the day grid goes to the device only if grid + gather indices take under this share of free memory
DEVICE_GRID_SHARE = 0.25


@dataclass
class DayOutputs:
    """Outputs of one day's valid windows in cursor order, and where the time went."""

    outputs: dict[str, np.ndarray]
    sym: np.ndarray
    minute: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)  # "windows" (cutting), "inference"
    windowing: str = "host"


#: ``stage_times``: stage ("upload", "gather", "compute", "download") -> [(start ms, end ms)] on one GPU clock
Intervals = dict[str, list[tuple[float, float]]]


def _empty_positions(total: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    return empty_outputs(total), np.empty(total, dtype=np.int32), np.empty(total, dtype=np.int32)


def _cut(
    scaled: np.ndarray,
    mask: np.ndarray,
    out: Any,
    sym: np.ndarray,
    minute: np.ndarray,
    *,
    seq_len: int,
    stride: int,
    start: int,
) -> tuple[int, int]:
    """The next ``len(out)`` windows from cursor ``start`` into ``out``, their positions into ``sym`` and ``minute``."""
    end = start + len(out)
    return windows.cut_windows(
        scaled,
        mask,
        out,
        seq_len=seq_len,
        stride=stride,
        start=start,
        sym_out=sym[start:end],
        minute_out=minute[start:end],
    )


class HostRunner:
    """Windows cut into one reused host buffer, predicted batch by batch."""

    def __init__(self, backend: Backend, *, capacity: int, seq_len: int, n_features: int) -> None:
        self.backend = backend
        self.seq_len = seq_len
        self.buffer = np.empty((capacity, seq_len, n_features), dtype=np.float32)

    def run(self, scaled: np.ndarray, mask: np.ndarray, *, stride: int) -> DayOutputs:
        total = windows.count_windows(mask, self.seq_len, stride)
        outputs, sym, minute = _empty_positions(total)
        cut_s = infer_s = 0.0
        start = 0
        while start < total:
            t0 = time.perf_counter()
            m = min(len(self.buffer), total - start)
            n, nxt = _cut(scaled, mask, self.buffer[:m], sym, minute, seq_len=self.seq_len, stride=stride, start=start)
            t1 = time.perf_counter()
            batch = self.backend.predict(self.buffer[:n])
            for name in OUTPUT_NAMES:
                outputs[name][start:nxt] = batch[name]
            infer_s += time.perf_counter() - t1
            cut_s += t1 - t0
            start = nxt
        return DayOutputs(outputs, sym, minute, {"windows": cut_s, "inference": infer_s}, "host")


# ---------------------------------------------------------------------------------------
# CUDA


class _Slot:
    """One place in the ring: its buffers, the events that order their copies and compute, and what they hold."""

    def __init__(self, torch: Any, buffers: PinnedBuffers) -> None:
        self.buffers = buffers
        self.uploaded = torch.cuda.Event()
        self.computed = torch.cuda.Event()
        self.downloaded = torch.cuda.Event(blocking=True)  # the host waits on it: sleep, do not spin a core
        self.span: tuple[int, int] | None = None  # cursors whose outputs are on their way back


class CudaRunner:
    """The pinned ring described in the module docstring."""

    def __init__(
        self,
        engine: DeviceEngine,
        *,
        capacity: int,
        seq_len: int,
        n_features: int,
        windowing: str = "auto",
        slots: int = RING_SLOTS,
        timing: bool = False,
    ) -> None:
        import torch

        if windowing not in WINDOWING:
            raise UsageError(f"unknown windowing {windowing!r}; use one of {', '.join(WINDOWING)}")
        self._torch = torch
        self.engine = engine
        self.seq_len = seq_len
        self.n_features = n_features
        self.windowing = windowing
        self.capacity = min(capacity, engine.max_batch) if engine.max_batch else capacity
        self.copy_stream = torch.cuda.Stream()
        self.compute_stream = engine.stream if engine.stream is not None else torch.cuda.Stream()
        self._grid_host: Any = None  # pinned staging buffer of the day grid (device windowing), grown on demand
        self._timing = timing
        self._marks: list[tuple[str, Any, Any]] = []  # (stage, start event, end event) of the last run
        self.slots = [
            _Slot(torch, PinnedBuffers(self.capacity, (seq_len, n_features), engine.out_dtypes)) for _ in range(slots)
        ]
        self._offsets = torch.arange(seq_len, device="cuda", dtype=torch.int64) - (seq_len - 1)
        torch.cuda.current_stream().synchronize()  # made on the default stream, read on the ring's streams

    def choose_windowing(self, n_sym: int, n_min: int, total: int) -> str:
        """Device windowing when the grid is fewer bytes than the windows and fits comfortably."""
        if self.windowing != "auto":
            return self.windowing
        grid = n_sym * n_min * self.n_features * 4
        cut = total * self.seq_len * self.n_features * 4
        index = total * self.seq_len * 8
        free, _ = self._torch.cuda.mem_get_info()
        return "device" if grid < cut and grid + index < DEVICE_GRID_SHARE * free else "host"

    def run(self, scaled: np.ndarray, mask: np.ndarray, *, stride: int) -> DayOutputs:
        total = windows.count_windows(mask, self.seq_len, stride)
        outputs, sym, minute = _empty_positions(total)
        if total == 0:
            return DayOutputs(outputs, sym, minute, {"windows": 0.0, "inference": 0.0}, self.windowing)
        mode = self.choose_windowing(scaled.shape[0], scaled.shape[1], total)
        self._marks = []
        t0 = time.perf_counter()
        try:
            cut_s = self._run_ring(scaled, mask, stride, mode, outputs, sym, minute)
        except BaseException:
            # leave the ring reusable: nothing in flight, no slot pointing into this day's outputs
            self.copy_stream.synchronize()
            self.compute_stream.synchronize()
            for slot in self.slots:
                slot.span = None
            raise
        elapsed = time.perf_counter() - t0
        return DayOutputs(outputs, sym, minute, {"windows": cut_s, "inference": elapsed - cut_s}, mode)

    def _upload_grid(self, scaled: np.ndarray, sym: np.ndarray, minute: np.ndarray) -> tuple[Any, Any]:
        """Device windowing: the day's grid once, and for every window the grid rows it covers."""
        torch = self._torch
        staged = self._pinned_grid(scaled)
        with torch.cuda.stream(self.copy_stream), self._timed("upload", self.copy_stream):
            grid = staged.to("cuda", non_blocking=True).view(-1, scaled.shape[2])
            ends = torch.from_numpy(sym.astype(np.int64) * scaled.shape[1] + minute).to("cuda")
            rows = (ends[:, None] + self._offsets).view(-1)
        self.compute_stream.wait_stream(self.copy_stream)
        grid.record_stream(self.compute_stream)  # read there: not freed while its reads are pending
        rows.record_stream(self.compute_stream)
        return grid, rows

    @contextmanager
    def _timed(self, stage: str, stream: Any) -> Iterator[None]:
        """With ``timing``, CUDA timing events on ``stream`` around what the block enqueues there."""
        if not self._timing:
            yield
            return
        start, end = (self._torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record(stream)
        yield
        end.record(stream)
        self._marks.append((stage, start, end))

    def stage_times(self) -> Intervals:
        """The last run's stage intervals in ms from its first event (``timing=True``; empty otherwise)."""
        if not self._marks:
            return {}
        self.copy_stream.synchronize()
        self.compute_stream.synchronize()
        origin = self._marks[0][1]  # the first upload: everything else waits for it
        out: Intervals = {}
        for stage, start, end in self._marks:
            out.setdefault(stage, []).append((origin.elapsed_time(start), origin.elapsed_time(end)))
        return out

    def _pinned_grid(self, scaled: np.ndarray) -> Any:
        """``scaled`` copied into the runner's pinned buffer (reallocated only for a larger day).

        Reusing it across days is safe: ``run`` returns only after every batch has come back,
        and each batch waited for the grid's upload.
        """
        torch = self._torch
        if self._grid_host is None or self._grid_host.numel() < scaled.size:
            self._grid_host = torch.empty(scaled.size, dtype=torch.float32, pin_memory=True)
        staged = self._grid_host[: scaled.size].view(scaled.shape)
        staged.numpy()[...] = scaled
        return staged

    def _run_ring(
        self,
        scaled: np.ndarray,
        mask: np.ndarray,
        stride: int,
        mode: str,
        outputs: dict[str, np.ndarray],
        sym: np.ndarray,
        minute: np.ndarray,
    ) -> float:
        """Every batch through the slots; returns the seconds spent cutting windows on the host."""
        torch = self._torch
        total, cut_s = len(sym), 0.0
        grid: Any = None
        rows: Any = None
        if mode == "device":
            sym[:], minute[:] = windows.window_positions(mask, self.seq_len, stride)
            grid, rows = self._upload_grid(scaled, sym, minute)
        i = start = 0
        while start < total:
            slot = self.slots[i % len(self.slots)]
            i += 1
            self._collect(slot, outputs)
            m = min(self.capacity, total - start)
            if mode == "device":
                n, nxt = m, start + m
                with torch.cuda.stream(self.compute_stream), self._timed("gather", self.compute_stream):
                    torch.index_select(
                        grid,
                        0,
                        rows[start * self.seq_len : nxt * self.seq_len],
                        out=slot.buffers.dev_in[:n].view(-1, self.n_features),
                    )
            else:
                c0 = time.perf_counter()
                n, nxt = _cut(
                    scaled,
                    mask,
                    slot.buffers.host_in[:m],
                    sym,
                    minute,
                    seq_len=self.seq_len,
                    stride=stride,
                    start=start,
                )
                cut_s += time.perf_counter() - c0
                with torch.cuda.stream(self.copy_stream):
                    with self._timed("upload", self.copy_stream):
                        slot.buffers.upload(n)
                    slot.uploaded.record(self.copy_stream)
                self.compute_stream.wait_event(slot.uploaded)
            self._execute(slot, n)
            slot.span = (start, nxt)
            start = nxt
        for slot in self.slots:
            self._collect(slot, outputs)
        return cut_s

    def _execute(self, slot: _Slot, n: int) -> None:
        """Run the engine on the slot's device input and queue the download of its outputs."""
        torch = self._torch
        with self._timed("compute", self.compute_stream):
            self.engine.execute(slot.buffers.dev_in, slot.buffers.dev_out, n, self.compute_stream)
        slot.computed.record(self.compute_stream)
        self.copy_stream.wait_event(slot.computed)
        with torch.cuda.stream(self.copy_stream):
            with self._timed("download", self.copy_stream):
                slot.buffers.download(n)
            slot.downloaded.record(self.copy_stream)

    def _collect(self, slot: _Slot, outputs: dict[str, np.ndarray]) -> None:
        """Wait for a slot's results and move them out; its buffers are then free again."""
        if slot.span is None:
            return
        slot.downloaded.synchronize()
        lo, hi = slot.span
        for name, tensor in slot.buffers.host_out.items():
            outputs[name][lo:hi] = tensor[: hi - lo].numpy()
        slot.span = None


Runner = HostRunner | CudaRunner


def make_runner(backend: Backend, *, capacity: int, seq_len: int, n_features: int, windowing: str = "auto") -> Runner:
    """The pinned ring when ``backend`` runs on a GPU (it has a device engine), else ordinary host buffers."""
    engine = backend.device_engine()
    if engine is None:
        return HostRunner(backend, capacity=capacity, seq_len=seq_len, n_features=n_features)
    return CudaRunner(engine, capacity=capacity, seq_len=seq_len, n_features=n_features, windowing=windowing)

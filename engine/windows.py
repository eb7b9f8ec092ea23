"""Model windows from a day's feature grid, cut by the C++ kernel (csrc/).

The window ending at minute ``t`` covers minutes ``t-seq_len+1 .. t`` of one symbol.
It is *valid* iff

- ``t >= seq_len - 1`` (windows never cross a trading day),
- ``(t - (seq_len - 1)) % stride == 0`` (``stride`` is ``sample_every``; 1 = dense),
- ``mask[s, t-seq_len+1 .. t]`` are all True.

Valid windows are enumerated symbol-major (symbol outer, minute ascending); a
*cursor* is the ordinal of a window in that order, ``0 .. count_windows(...)``.
A day with no symbols, no minutes or fewer than ``seq_len`` minutes has no windows.

The kernel copies each window (``seq_len * F`` contiguous floats of the C-contiguous
``(S, M, F)`` grid) into a caller-provided ``(capacity, seq_len, F)`` buffer, float32
byte for byte or float16 rounded to nearest even exactly like numpy's
``astype(np.float16)``, with the GIL released and the work split over threads. Every
argument is checked first; a bad one raises :class:`tthf.errors.UsageError`.
docs/windows.md has the details and measured bandwidth.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

try:
    import tthf.engine._kernels as _kernels
except ImportError as e:  # pragma: no cover - depends on how the package was set up
    raise ImportError(
        f"the C++ kernels module tthf.engine._kernels is not built ({e}); in a source "
        "checkout run `bash csrc/build_dev.sh`, otherwise reinstall tthf with pip"
    ) from e
from tthf.engine.config import SEQ_LEN
from tthf.errors import UsageError

__all__ = [
    "Batch",
    "count_windows",
    "cut_windows",
    "default_threads",
    "gather_windows",
    "iter_batches",
    "window_positions",
]

# DLPack device types whose memory the CPU can write: kDLCPU, kDLCUDAHost (pinned).
_HOST_DEVICES = (1, 3)
_INT32 = np.iinfo(np.int32)


def default_threads() -> int:
    """Threads the kernel may use when ``threads=None``: the usable cores, at most 4.

    The copy is bound by memory bandwidth, which a few cores saturate, and the model
    needs the other cores. Small copies use fewer threads: one per 4 MiB of output.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def count_windows(mask: Any, seq_len: int = SEQ_LEN, stride: int = 1) -> int:
    """Number of valid windows of a day's ``(S, M)`` bool mask."""
    return int(_kernels.count_windows(_host_array(mask, "mask"), _int(seq_len, "seq_len"), _int(stride, "stride")))


def window_positions(mask: Any, seq_len: int = SEQ_LEN, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(sym_idx, minute_idx)`` int32 arrays of every valid window, in cursor order.

    ``minute_idx`` is the window's last minute ``t``; the training dataset shuffles
    these positions and cuts batches with :func:`gather_windows`.
    """
    sym, minute = _kernels.window_positions(_host_array(mask, "mask"), _int(seq_len, "seq_len"), _int(stride, "stride"))
    return sym, minute


def cut_windows(
    features: Any,
    mask: Any,
    out: Any,
    *,
    seq_len: int = SEQ_LEN,
    stride: int = 1,
    start: int = 0,
    sym_out: Any = None,
    minute_out: Any = None,
    threads: int | None = None,
) -> tuple[int, int]:
    """Fill ``out`` with the valid windows from cursor ``start`` on; return ``(n, next_start)``.

    - ``features``: ``(S, M, F)`` float32, C-contiguous (scaled features of one day);
    - ``mask``: ``(S, M)`` bool, True where the minute is usable;
    - ``out``: ``(capacity, seq_len, F)`` float32 or float16, writable, C-contiguous:
      a numpy array or a CPU torch tensor (pinned memory included); reused across
      calls, nothing is allocated per batch;
    - ``sym_out``, ``minute_out``: optional int32 arrays of at least ``capacity``
      entries that receive each window's symbol index and last minute.

    ``out[:n]`` receives the windows with cursors ``start .. start+n-1``; ``n`` is
    ``capacity`` unless the day ends first. Pass ``next_start`` to the next call; the
    day is done when ``n == 0``. A ``start`` past the day's last window is an error.
    """
    n, next_start = _kernels.cut_windows(
        _host_array(features, "features"),
        _host_array(mask, "mask"),
        _host_array(out, "out"),
        _int(seq_len, "seq_len"),
        _int(stride, "stride"),
        _int(start, "start"),
        None if sym_out is None else _host_array(sym_out, "sym_out"),
        None if minute_out is None else _host_array(minute_out, "minute_out"),
        _threads(threads),
    )
    return int(n), int(next_start)


def gather_windows(
    features: Any,
    sym_idx: Any,
    minute_idx: Any,
    out: Any,
    *,
    seq_len: int = SEQ_LEN,
    threads: int | None = None,
) -> int:
    """Fill ``out[:n]`` with the windows ending at ``(sym_idx[i], minute_idx[i])``; return n.

    For batches in any order (shuffled training batches): positions usually come from
    :func:`window_positions`. The mask is not consulted; every position is
    bounds-checked (``0 <= sym < S``, ``seq_len - 1 <= minute < M``) before anything is
    written. ``out`` is as in :func:`cut_windows`, with capacity ``>= n``.
    """
    return int(
        _kernels.gather_windows(
            _host_array(features, "features"),
            _indices(sym_idx, "sym_idx"),
            _indices(minute_idx, "minute_idx"),
            _host_array(out, "out"),
            _int(seq_len, "seq_len"),
            _threads(threads),
        )
    )


class Batch(NamedTuple):
    """One batch of :func:`iter_batches`: views of the reused buffers, valid until the next one."""

    windows: Any  # out[:n], numpy array or torch tensor like out
    sym_idx: np.ndarray  # (n,) int32
    minute_idx: np.ndarray  # (n,) int32, each window's last minute
    start: int  # cursor of the first window


def iter_batches(
    features: Any,
    mask: Any,
    out: Any,
    *,
    seq_len: int = SEQ_LEN,
    stride: int = 1,
    threads: int | None = None,
) -> Iterator[Batch]:
    """Walk a day's valid windows in cursor order, refilling ``out`` for every batch.

    Every valid window comes exactly once. The batches are views of ``out`` and of two
    index arrays allocated once: consume (or copy) a batch before asking for the next.
    """
    capacity = len(out)
    if capacity < 1:
        raise UsageError("out must hold at least one window; allocate it with capacity >= 1")
    sym = np.empty(capacity, dtype=np.int32)
    minute = np.empty(capacity, dtype=np.int32)
    start = 0
    while True:
        n, next_start = cut_windows(
            features,
            mask,
            out,
            seq_len=seq_len,
            stride=stride,
            start=start,
            sym_out=sym,
            minute_out=minute,
            threads=threads,
        )
        if n == 0:
            return
        yield Batch(out[:n], sym[:n], minute[:n], start)
        start = next_start


def _host_array(obj: Any, name: str) -> Any:
    """numpy arrays and buffer objects as they are; DLPack producers (torch) as a numpy view."""
    if isinstance(obj, np.ndarray) or not hasattr(obj, "__dlpack__"):
        return obj
    device_type = int(obj.__dlpack_device__()[0])
    if device_type not in _HOST_DEVICES:
        raise UsageError(
            f"{name} is in device memory (DLPack device type {device_type}); the kernel works on "
            "host memory: pass a CPU tensor (pinned, for fast transfers: "
            "torch.empty(..., pin_memory=True)) and move it with .to(device, non_blocking=True)"
        )
    try:
        return np.from_dlpack(obj)
    except (BufferError, RuntimeError, TypeError, ValueError) as e:
        raise UsageError(
            f"{name} cannot be viewed as a numpy array ({e}); pass a float32/float16 CPU tensor "
            "without requires_grad (use .detach())"
        ) from e


def _indices(obj: Any, name: str) -> np.ndarray:
    """Any integer index array as int32, refusing values int32 cannot hold."""
    arr = np.asarray(_host_array(obj, name))
    if arr.size == 0:
        return np.zeros(0, np.int32)
    if arr.dtype != np.int32:
        if arr.dtype.kind not in "iu":
            raise UsageError(f"{name} must be an integer array, got dtype {arr.dtype}")
        if arr.min() < _INT32.min or arr.max() > _INT32.max:
            raise UsageError(f"{name} has values outside int32; positions must index the day's grid")
        arr = arr.astype(np.int32)
    return np.ascontiguousarray(arr)


def _int(value: Any, name: str) -> int:
    try:
        number = int(value.__index__())
    except (AttributeError, TypeError):
        raise UsageError(f"{name} must be an integer, got {value!r}") from None
    if not -(2**63) <= number < 2**63:
        raise UsageError(f"{name} must fit in 64 bits, got {number}")
    return number


def _threads(threads: int | None) -> int:
    return default_threads() if threads is None else _int(threads, "threads")

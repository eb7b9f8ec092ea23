"""Training and evaluation windows over scaled days, cut by the shared window rule.

Only an index of (day, symbol, end minute) is kept; windows are copied out of the
day grids when asked for, so memory stays at the size of the days themselves. The
batch path copies whole batches with the C++ kernel into one reused buffer, which is
much faster than ``__getitem__`` plus the default collate (docs/model.md, "Data").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from tthf.engine import windows
from tthf.engine.config import SEQ_LEN
from tthf.engine.features.day import DayFeatures


class Batch(NamedTuple):
    """One batch. ``x`` is a view of a reused buffer: valid until the next batch."""

    x: torch.Tensor  # (B, seq_len, F) float32
    y: torch.Tensor  # (B, 2) float32 [ret_1h, vol_10m], NaN where unavailable
    ids: np.ndarray  # (B,) int64 dataset ordinals of the rows


class WindowIndex(NamedTuple):
    """Where each window ends: day ordinal, symbol row and minute column (all (N,))."""

    day: np.ndarray
    sym: np.ndarray
    minute: np.ndarray


class ThreeHeadedTransformerDataset(Dataset):
    """Windows of ``(scaled (S, M, F) float32, DayFeatures)`` days, day-major, then
    symbol-major with ascending end minute (the window rule's order within a day).

    ``stride`` is the rule's stride (``TrainConfig.train_stride`` for training, 1 for
    dense inference). ``require_labels`` keeps only windows whose two labels are both
    present.
    """

    def __init__(
        self,
        days: Sequence[tuple[np.ndarray, DayFeatures]],
        *,
        seq_len: int = SEQ_LEN,
        stride: int = 1,
        require_labels: bool = True,
    ) -> None:
        self.seq_len = seq_len
        self.days = [day for _, day in days]
        self._features: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        parts_day, parts_sym, parts_min = [], [], []
        n_features = None
        for d, (scaled, day) in enumerate(days):
            if scaled.dtype != np.float32 or scaled.shape[:2] != day.mask.shape or scaled.ndim != 3:
                raise ValueError(
                    f"{day.date}: scaled features must be float32 (S, M, F) on the day's grid {day.mask.shape}, "
                    f"got {scaled.dtype} {scaled.shape}"
                )
            if n_features is not None and scaled.shape[2] != n_features:
                raise ValueError(f"{day.date}: {scaled.shape[2]} features, earlier days have {n_features}")
            n_features = scaled.shape[2]
            self._features.append(np.ascontiguousarray(scaled))
            self._labels.append(day.labels.astype(np.float32, copy=False))
            sym, minute = windows.window_positions(day.mask, seq_len, stride)
            if require_labels:
                keep = np.isfinite(day.labels[sym, minute]).all(axis=1)
                sym, minute = sym[keep], minute[keep]
            parts_day.append(np.full(len(sym), d, dtype=np.int32))
            parts_sym.append(np.asarray(sym, dtype=np.int32))
            parts_min.append(np.asarray(minute, dtype=np.int32))
        self.n_features = n_features or 0
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int32)
        self.index = WindowIndex(cat(parts_day), cat(parts_sym), cat(parts_min))

    def __len__(self) -> int:
        return len(self.index.day)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        d, s, t = int(self.index.day[i]), int(self.index.sym[i]), int(self.index.minute[i])
        x = self._features[d][s, t - self.seq_len + 1 : t + 1]
        return torch.from_numpy(x.copy()), torch.from_numpy(self._labels[d][s, t].copy())

    def labels(self) -> np.ndarray:
        """``(N, 2)`` float32 labels of every window, in dataset order."""
        out = np.empty((len(self), 2), dtype=np.float32)
        for d, rows in self._day_runs(np.arange(len(self))):
            out[rows] = self._labels[d][self.index.sym[rows], self.index.minute[rows]]
        return out

    def keys(self, i: int) -> tuple[DayFeatures, str, np.datetime64]:
        """The (day, symbol, end minute) of window ``i``."""
        day = self.days[int(self.index.day[i])]
        return day, day.symbols[int(self.index.sym[i])], day.minutes[int(self.index.minute[i])]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        limit: int | None = None,
    ) -> Iterator[Batch]:
        """Batches copied by the C++ kernel into one reused buffer.

        With ``shuffle`` the order comes from ``torch.randperm(generator)``; inside a
        batch rows are grouped by day (stable), so each day is one kernel call.
        ``limit`` stops after that many windows: with ``shuffle``, a fresh random
        subset on every call (training draws a new sample of windows each epoch).
        """
        order = torch.randperm(len(self), generator=generator).numpy() if shuffle else np.arange(len(self))
        order = order[:limit] if limit is not None else order
        n = len(order)
        xbuf = np.empty((min(batch_size, n), self.seq_len, self.n_features), dtype=np.float32)
        ybuf = np.empty((min(batch_size, n), 2), dtype=np.float32)
        for start in range(0, n, batch_size):
            ids = order[start : start + batch_size]
            if drop_last and len(ids) < batch_size:
                break
            if shuffle:
                ids = ids[np.argsort(self.index.day[ids], kind="stable")]
            for d, rows in self._day_runs(ids):
                lo, hi = rows.start, rows.stop
                sym, minute = self.index.sym[ids[lo:hi]], self.index.minute[ids[lo:hi]]
                windows.gather_windows(self._features[d], sym, minute, xbuf[lo:hi], seq_len=self.seq_len)
                ybuf[lo:hi] = self._labels[d][sym, minute]
            k = len(ids)
            yield Batch(torch.from_numpy(xbuf[:k]), torch.from_numpy(ybuf[:k]), ids.astype(np.int64))

    def _day_runs(self, ids: np.ndarray) -> Iterator[tuple[int, slice]]:
        """Runs of equal day in ``ids`` (already grouped by day): (day, slice of ids)."""
        if len(ids) == 0:
            return
        day = self.index.day[ids]
        cuts = np.flatnonzero(np.diff(day)) + 1
        bounds = np.concatenate([[0], cuts, [len(ids)]])
        for lo, hi in itertools.pairwise(bounds):
            yield int(day[lo]), slice(int(lo), int(hi))

"""The original batch pipeline: per date, pandas features, a Dataset of windows, a DataLoader,
the eager model, a CSV; dates spread over a process pool, one process per date at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from baseline.features import build_features
from tthf.engine.config import RunConfig
from tthf.engine.data.calendar import session_minutes
from tthf.engine.model.network import ThreeHeadedTransformer, load_checkpoint

OUTPUTS = ("ret_1h", "vol_10m", "ret_conf", "vol_conf")


class WindowDataset(Dataset):
    """Every valid window of one day (the design's window rule), one ``__getitem__`` per window."""

    def __init__(self, scaled: np.ndarray, mask: np.ndarray, seq_len: int) -> None:
        self.scaled = scaled
        self.seq_len = seq_len
        full = np.lib.stride_tricks.sliding_window_view(mask, seq_len, axis=1).all(axis=-1)
        sym, first = np.nonzero(full)
        self.sym, self.minute = sym, first + seq_len - 1

    def __len__(self) -> int:
        return len(self.sym)

    def __getitem__(self, i: int) -> torch.Tensor:
        t = self.minute[i]
        return torch.from_numpy(self.scaled[self.sym[i], t - self.seq_len + 1 : t + 1])


@dataclass
class BaselineResult:
    date: str
    rows: int
    windows: int
    seconds: dict[str, float] = field(default_factory=dict)
    file: str = ""


class _Model:
    """What a worker loads once: config, scalers and the eager model."""

    def __init__(self, run_dir: Path, device: str) -> None:
        self.config = RunConfig.from_json((run_dir / "config.json").read_text())
        scalers = json.loads((run_dir / "scalers.json").read_text())
        table = pd.DataFrame(scalers["features"]).set_index("name")
        self.names = list(self.config.feature_names)
        self.mean, self.std = table.loc[self.names, "mean"], table.loc[self.names, "std"]
        self.clip = float(scalers["clip"])
        self.device = torch.device(device)
        model = load_checkpoint((run_dir / "checkpoint.safetensors").read_bytes(), self.config.model)
        self.model: ThreeHeadedTransformer = model.to(self.device).eval()


_WORKER: _Model | None = None


def _init_worker(run_dir: str, device: str, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = _Model(Path(run_dir), device)


def predict_date(model: _Model, data_root: Path, day: dt.date, out_dir: Path, batch_size: int) -> BaselineResult:
    """One date: read, features, scale, windows, model, CSV."""
    t0 = time.perf_counter()
    folder = data_root / f"date={day.isoformat()}"
    raw = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))], ignore_index=True)
    t1 = time.perf_counter()
    symbols, feats, mask = build_features(raw, day)
    scaled = ((feats[model.names] - model.mean) / model.std).clip(-model.clip, model.clip)
    n_sym, n_min = mask.shape
    grid = scaled.to_numpy(dtype=np.float32).reshape(n_sym, n_min, len(model.names))
    t2 = time.perf_counter()
    dataset = WindowDataset(grid, mask, model.config.seq_len)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    parts = []
    cuda = model.device.type == "cuda"
    with torch.inference_mode(), torch.autocast("cuda", enabled=cuda):
        for x in loader:
            parts.append(torch.stack([o.float() for o in model.model(x.to(model.device))], dim=1).cpu().numpy())
    t3 = time.perf_counter()
    out = np.concatenate(parts) if parts else np.empty((0, len(OUTPUTS)), np.float32)
    minutes = pd.DatetimeIndex(session_minutes(day)).tz_localize("UTC")
    frame = pd.DataFrame(out, columns=list(OUTPUTS))
    frame.insert(0, "symbol", np.asarray(symbols, dtype=object)[dataset.sym])
    frame.insert(0, "ts", minutes[dataset.minute])
    frame["source_ts"] = frame["ts"]
    frame = frame.sort_values(["ts", "symbol"], kind="stable")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{day.isoformat()}.csv"
    frame.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    t4 = time.perf_counter()
    seconds = {"read": t1 - t0, "features": t2 - t1, "windows+model": t3 - t2, "write": t4 - t3, "total": t4 - t0}
    return BaselineResult(day.isoformat(), len(frame), len(dataset), seconds, str(path))


def _task(args: tuple[str, dt.date, str, int]) -> BaselineResult:
    data_root, day, out_dir, batch_size = args
    assert _WORKER is not None
    return predict_date(_WORKER, Path(data_root), day, Path(out_dir), batch_size)


def run_baseline(
    run_dir: str | Path,
    data_root: str | Path,
    dates: list[dt.date],
    out_dir: str | Path,
    *,
    processes: int | None = None,
    batch_size: int = 4096,
    device: str | None = None,
) -> list[BaselineResult]:
    """Predict ``dates`` with a pool of ``processes`` (default: one per core, at most one per date).

    Each process gets ``cores // processes`` torch threads, so the pool uses the machine's
    cores once over. Processes are forked (Linux's default), as the original system did.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cores = len(os.sched_getaffinity(0))
    processes = processes or max(1, min(cores, len(dates)))
    threads = max(1, cores // processes)
    tasks = [(str(data_root), day, str(out_dir), batch_size) for day in dates]
    if processes == 1:
        before = torch.get_num_threads()
        try:
            _init_worker(str(run_dir), device, threads)
            return [_task(t) for t in tasks]
        finally:
            torch.set_num_threads(before)
    ctx = multiprocessing.get_context("spawn" if device == "cuda" else "fork")
    with ctx.Pool(processes, initializer=_init_worker, initargs=(str(run_dir), device, threads)) as pool:
        return pool.map(_task, tasks, chunksize=1)

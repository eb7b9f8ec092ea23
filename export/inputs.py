"""The inputs every artifact is validated on: fresh random batches and real held-out windows.

Random batches are N(0, 1): the model sees scaled features, which are on unit scale.
Real windows come from the run's test dates (held out from training), built with the
same features, scalers and window rule as inference, so validation also covers the
tails and correlations of real inputs that random draws miss.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import NamedTuple

import numpy as np

from tthf.engine import runs
from tthf.errors import DataError, StoreError

log = logging.getLogger("tthf.export")


class InputSet(NamedTuple):
    name: str  # unique: "random@37", "heldout@512#0" (kind @ batch size, # part)
    x: np.ndarray  # (B, seq_len, F) float32


def random_sets(batches: tuple[int, ...], seq_len: int, n_features: int, seed: int) -> list[InputSet]:
    rng = np.random.default_rng(seed)
    return [
        InputSet(f"random@{b}", rng.standard_normal((b, seq_len, n_features), dtype=np.float32)) for b in batches
    ]


def heldout_windows(run: runs.Run, n: int, *, data_root: str | None = None, endpoint_url: str | None = None,
                    seed: int = 0) -> np.ndarray:
    """Up to ``n`` scaled windows from the run's test dates, in date order, sampled uniformly per date.

    Raises ``DataError``/``StoreError`` (subclasses say which file) when the data is unreachable.
    """
    from tthf.engine import windows
    from tthf.engine.features import build_day
    from tthf.engine.data.marketdata import read_day
    from tthf.engine.features.scalers import Scalers
    from tthf.engine.store import open_store

    cfg = run.config
    if not cfg.splits.test:
        raise DataError(f"run {run.ref.name} has no test dates in config.json; re-create it with tthf-train")
    store = open_store(data_root or cfg.data_root, endpoint_url=endpoint_url)
    scalers = Scalers.from_json(run.read_text(runs.SCALERS))
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    have = 0
    for iso in cfg.splits.test:
        if have >= n:
            break
        day = dt.date.fromisoformat(iso)
        feats = build_day(read_day(store, day), day)
        scaled = scalers.transform(feats, cfg.feature_names)
        sym, minute = windows.window_positions(feats.mask, cfg.seq_len, 1)
        take = np.sort(rng.choice(len(sym), size=min(n - have, len(sym)), replace=False))
        out = np.empty((len(take), cfg.seq_len, scaled.shape[2]), dtype=np.float32)
        windows.gather_windows(scaled, sym[take], minute[take], out, seq_len=cfg.seq_len)
        parts.append(out)
        have += len(take)
        log.info("held-out windows: %d of %d from %s", len(take), len(sym), iso)
    if not have:
        raise DataError(f"the test dates of run {run.ref.name} have no valid 30-minute window under {store.uri()}")
    return np.concatenate(parts)[:n]


def heldout_sets(run: runs.Run, n: int, batch: int, **kwargs: object) -> tuple[list[InputSet], str | None]:
    """Held-out windows cut into batches of ``batch``; (sets, None) or ([], why they are missing)."""
    if n == 0:
        return [], "disabled with --real-windows 0"
    try:
        x = heldout_windows(run, n, **kwargs)  # type: ignore[arg-type]
    except (DataError, StoreError) as exc:
        return [], str(exc)
    return [
        InputSet(f"heldout@{len(x[i:i + batch])}#{k}", x[i:i + batch]) for k, i in enumerate(range(0, len(x), batch))
    ], None

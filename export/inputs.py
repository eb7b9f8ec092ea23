"""The inputs every artifact is validated on: fresh random batches and real held-out windows.

Random batches are N(0, 1) (``ModelIO.dummy_inputs``): the model sees scaled features,
which are on unit scale. Real windows come from the run's test dates (held out from
training), built with the same features, scalers and window rule as inference, so
validation also covers the tails and correlations of real inputs that random draws miss.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np

from tthf.engine import runs, windows
from tthf.engine.config import RunConfig
from tthf.engine.features import Scalers
from tthf.engine.model.interface import InputSet
from tthf.engine.runtime.day import DayHost
from tthf.engine.store import Store, as_store
from tthf.errors import DataError, StoreError

log = logging.getLogger("tthf.export")


def heldout_windows(run: runs.Run, n: int, data: Store | None = None, *, seed: int = 0) -> np.ndarray:
    """Up to ``n`` scaled windows from the run's test dates, in date order, sampled uniformly per date.

    ``data`` defaults to the run's training data root. Raises ``DataError``/``StoreError``
    (subclasses say which file) when the data is unreachable.
    """
    if not run.config.splits.test:
        raise DataError(
            f"run {run.ref.name} has no test dates in config.json; re-create it with tthf-train (an imported "
            "run: give [data] raw_root and heldout_dates in its spec and run tthf-import --overwrite)"
        )
    return dated_windows(run, run.config.splits.test, n, data, seed=seed, what="held-out")


def training_windows(run: runs.Run, n: int, data: Store | None = None, *, seed: int = 0) -> np.ndarray:
    """Up to ``n`` scaled windows from the run's training dates, the same number from each: what a
    quantizer calibrates on, so that no evaluated (validation or test) date shapes the
    reduced-precision model it judges, and every training date's ranges count."""
    dates = run.config.splits.train
    if not dates:
        raise DataError(f"run {run.ref.name} has no training dates in config.json; re-create it with tthf-train")
    return dated_windows(run, dates, n, data, seed=seed, what="training", per_date=-(-n // len(dates)))


def dated_windows(
    run: runs.Run,
    dates: list[str],
    n: int,
    data: Store | None = None,
    *,
    seed: int = 0,
    what: str = "dated",
    per_date: int | None = None,
) -> np.ndarray:
    """Up to ``n`` scaled windows of ``dates`` (ISO) of the run, in date order (``sample_windows``)."""
    return sample_windows(
        run.config,
        run.load_scalers(),
        n,
        data or as_store(run.config.data_root),
        dates=dates,
        seed=seed,
        what=f"the {what} dates of run {run.ref.name}",
        per_date=per_date,
    )


def sample_windows(
    cfg: RunConfig,
    scalers: Scalers,
    n: int,
    data: Store,
    *,
    dates: list[str] | None = None,
    seed: int = 0,
    what: str = "the test dates",
    per_date: int | None = None,
) -> np.ndarray:
    """Up to ``n`` scaled windows of ``dates`` (default: the config's test dates), in date order,
    sampled uniformly per date (at most ``per_date`` from each; default: as many as are left to
    take). From a config and scalers: ``tthf-import`` validates before the run exists."""
    seq_len = cfg.model.seq_len
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    have = 0
    host = DayHost.from_config(cfg, scalers, data)
    for iso in cfg.splits.test if dates is None else dates:
        if have >= n:
            break
        day = dt.date.fromisoformat(iso)
        feats = host.build(day)
        scaled = feats.scaled
        sym, minute = windows.window_positions(feats.mask, seq_len, 1)
        take = np.sort(rng.choice(len(sym), size=min(n - have, per_date or n, len(sym)), replace=False))
        out = np.empty((len(take), seq_len, scaled.shape[2]), dtype=np.float32)
        windows.gather_windows(scaled, sym[take], minute[take], out, seq_len=seq_len)
        parts.append(out)
        have += len(take)
        log.info("%s: %d of %d windows from %s", what, len(take), len(sym), iso)
    if not have:
        raise DataError(f"{what} have no valid {seq_len}-minute window under {data.uri()}")
    return np.concatenate(parts)[:n]


def heldout_sets(
    run: runs.Run, n: int, batch: int, data: Store | None = None, *, seed: int = 0
) -> tuple[list[InputSet], str | None]:
    """Held-out windows cut into batches of ``batch``; (sets, None) or ([], why they are missing)."""
    if n == 0:
        return [], "disabled with --real-windows 0"
    try:
        x = heldout_windows(run, n, data, seed=seed)
    except (DataError, StoreError) as exc:
        return [], str(exc)
    return [
        InputSet(f"heldout@{len(x[i : i + batch])}#{k}", x[i : i + batch])
        for k, i in enumerate(range(0, len(x), batch))
    ], None

"""The windows an explanation looks at: one date's sampled forecasts, their inputs and what happened after them.

The inputs are built as tthf-run builds them (``DayHost``: the run's scaled features), the
outcomes as tthf-eval computes them (``realized``: training's label code, or an imported run's
``[labels]`` from its feature files). Sampling keeps
every ``minute_step``-th forecast minute and, with ``max_symbols``, a random subset of
symbols (the same for every minute, so each minute's cross-section stays comparable).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from tthf.engine import windows
from tthf.engine.evaluation.realized import label_source, realized
from tthf.engine.explain.importance import Sample
from tthf.engine.runs import Run
from tthf.engine.runtime.day import DayHost
from tthf.engine.store import Store
from tthf.errors import DataError, UsageError


@dataclass(frozen=True)
class Sampling:
    """Which forecasts of each date an explanation uses (stated in the report)."""

    minute_step: int = 10  # every minute_step-th minute of the session that has a window
    max_symbols: int | None = None  # None: every symbol
    seed: int = 0

    def __post_init__(self) -> None:
        if self.minute_step < 1 or (self.max_symbols is not None and self.max_symbols < 3):
            raise UsageError(
                f"explanation sampling: the minute step must be at least 1 (got {self.minute_step}) and the "
                f"symbols at least 3, enough for a cross-sectional IC (got {self.max_symbols})"
            )

    def describe(self) -> str:
        symbols = (
            "every symbol" if self.max_symbols is None else f"at most {self.max_symbols} symbols (seed {self.seed})"
        )
        return f"every {self.minute_step}th forecast minute, {symbols}"


def sample_date(run: Run, data: Store, day: dt.date, sampling: Sampling) -> Sample:
    """The date's sampled windows, sorted by (minute, symbol), with their realized ret_1h and vol_10m."""
    host = DayHost(run, data)
    feats = host.features(host.read(day)).features
    assert feats is not None
    store, files = label_source(run.config, data)
    real = realized(store, day, run.config.calendar, files, symbols=feats.symbols)
    if real.symbols != feats.symbols:
        raise DataError(f"{data.uri()}: {day} gives different symbols for inputs and outcomes; rebuild the data")
    seq_len = run.config.model.seq_len
    sym, minute = windows.window_positions(feats.mask, seq_len, 1)
    keep = (minute - (seq_len - 1)) % sampling.minute_step == 0
    if sampling.max_symbols is not None and sampling.max_symbols < len(feats.symbols):
        rng = np.random.default_rng(sampling.seed)
        chosen = rng.choice(len(feats.symbols), sampling.max_symbols, replace=False)
        keep &= np.isin(sym, chosen)
    order = np.lexsort((sym[keep], minute[keep]))
    sym, minute = sym[keep][order], minute[keep][order]
    x = np.empty((len(sym), seq_len, feats.scaled.shape[2]), dtype=np.float32)
    windows.gather_windows(feats.scaled, sym, minute, x, seq_len=seq_len)
    return Sample(day.isoformat(), x, minute, sym, real.labels[sym, minute, 0], real.vol[sym, minute])

"""``tthf-eval --explain``'s section of metrics.json: permutation importance and attention on the evaluated dates.

For each scored date: sample its forecasts (``samples``), score them through the run's
fastest validated backend (``backend.serving_backend``, what tthf-run uses), then once per
removed feature, family and lag (``importance``); tthf's own network also gives its mean
attention on the same windows (``attention``). The cost is one pass over the sampled
windows per item (95 with the 59 built-in features), so sampling is the knob.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tthf.engine.explain import importance
from tthf.engine.explain.attention import mean_attention
from tthf.engine.explain.backend import serving_backend
from tthf.engine.explain.samples import Sampling, sample_date
from tthf.engine.model.network import vol_floor
from tthf.engine.runs import Run
from tthf.engine.runtime.backends import Backend
from tthf.engine.store import Store


@dataclass(frozen=True)
class ItemDone:
    """One permutation pass is done (for a progress bar)."""

    date: str
    item: str
    windows: int


def explain_dates(
    run: Run,
    data: Store,
    dates: list[str],
    sampling: Sampling | None = None,
    *,
    backend: Backend | None = None,
    on_start: Callable[[int], None] | None = None,
    on_step: Callable[[ItemDone], None] | None = None,
) -> dict[str, Any]:
    """The explain section for ``dates`` (ISO strings, those tthf-eval scored).

    ``backend`` defaults to the run's fastest validated one; ``on_start(n)`` gets the number of
    permutation passes, ``on_step`` each one as it finishes.
    """
    started = time.perf_counter()
    sampling = sampling or Sampling()
    backend = backend or serving_backend(run)
    cfg = run.config
    groups = cfg.imported.groups if cfg.imported is not None else None  # an import's features.groups
    all_items = importance.items(cfg.feature_names, cfg.model.seq_len, groups)
    if on_start:
        on_start(len(dates) * len(all_items))
    bases, per_date, windows = [], [], []
    attention: list[tuple[int, dict[str, Any]]] = []
    model = None if cfg.imported is not None else run.load_model()
    for iso in dates:
        sample = sample_date(run, data, dt.date.fromisoformat(iso), sampling)
        names = iter(all_items)

        def step(n: int, iso: str = iso, names: Any = names) -> None:
            if on_step:
                on_step(ItemDone(iso, next(names).name, n))

        base, lost = importance.date_importance(
            backend.predict, sample, all_items, vol_floor(cfg.model), seed=sampling.seed, on_item=step
        )
        bases.append(base)
        per_date.append(lost)
        windows.append(len(sample.x))
        if model is not None:
            attention.append((len(sample.x), mean_attention(model, sample.x)))
    seconds = time.perf_counter() - started
    return {
        "backend": f"{backend.name} ({backend.detail})",
        "sampling": {**asdict(sampling), "text": sampling.describe(), "windows_per_date": windows},
        "families": importance.families(cfg.feature_names, groups),
        **importance.summarize(all_items, bases, per_date),
        "attention": _pooled(attention) if attention else {"available": False, "reason": _no_attention(run)},
        "seconds": round(seconds, 2),
        "seconds_per_date": round(seconds / max(len(dates), 1), 2),
    }


def _pooled(parts: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The dates' mean attention, weighted by their windows."""
    weights = [n for n, _ in parts]
    return {
        "available": True,
        **{
            view: np.average([part[view] for _, part in parts], axis=0, weights=weights).tolist()
            for view in ("from_last", "all_queries")
        },
        "n_windows": sum(weights),
    }


def _no_attention(run: Run) -> str:
    return (
        f"run {run.ref.name} was imported as an ONNX graph: tthf has no PyTorch source for it that can "
        "return its attention weights"
    )

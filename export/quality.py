"""Forecast quality of a reduced precision: does it forecast as well as fp32 on the held-out dates?

The spread bars (``tthf.engine.model.interface``) say a variant's outputs are close to fp32's;
users care whether its forecasts are as good. At export, on up to ``ExportConfig.quality_windows``
windows of the run's held-out (test) dates with their labels (an imported run's ``[labels]`` from
its feature files when it has them, as tthf-eval reads them), the fp32 reference and the variant
are scored by the same function as training's metrics.json and tthf-eval's pooled block
(``tthf.engine.evaluation.array_scores.heldout_metrics``), and the differences are held to
``QUALITY_BARS`` (docs/export.md, "Forecast quality"):

- ``ret_1h`` IC and rank IC: |variant - fp32| <= 0.005;
- ``vol_10m`` QLIKE: within 1% of fp32's;
- ``ret_conf`` / ``vol_conf`` calibration gap (the largest quintile's |coverage - stated
  probability|): |variant - fp32| <= 1 percentage point.

A variant that misses any is rejected, with the numbers in its manifest record.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tthf.engine import runs, windows
from tthf.engine.data.marketdata import read_day
from tthf.engine.evaluation.array_scores import heldout_metrics
from tthf.engine.evaluation.baselines import last_rv
from tthf.engine.evaluation.realized import label_source, realized
from tthf.engine.features import build_day
from tthf.engine.model.interface import Outputs, predict_in_chunks
from tthf.engine.model.network import vol_floor
from tthf.engine.runtime.backends import Backend
from tthf.engine.runtime.day import DayHost
from tthf.engine.store import Store, as_store
from tthf.errors import DataError, StoreError
from tthf.export.reference import reference_backend

log = logging.getLogger("tthf.export")


@dataclass(frozen=True)
class QualityBar:
    """How far a score may move from fp32's: ``absolute`` (score units) or ``relative`` (of fp32's |score|)."""

    absolute: float | None = None
    relative: float | None = None

    def allows(self, fp32: float, variant: float) -> bool:
        delta = abs(variant - fp32)
        if self.relative is not None:
            return delta <= self.relative * abs(fp32)
        assert self.absolute is not None
        return delta <= self.absolute


#: the judged scores and their bars (docs/export.md, "Forecast quality")
QUALITY_BARS = {
    "ret_1h_ic": QualityBar(absolute=0.005),
    "ret_1h_rank_ic": QualityBar(absolute=0.005),
    "vol_10m_qlike": QualityBar(relative=0.01),
    "ret_conf_calibration_gap": QualityBar(absolute=0.01),
    "vol_conf_calibration_gap": QualityBar(absolute=0.01),
}


@dataclass
class QualitySet:
    """Held-out windows with what they are scored against: labels ``(N, 2)`` [ret_1h, vol_10m] and the
    last-10-minute realized volatility (``heldout_metrics``' vol baseline, which also picks its rows)."""

    x: np.ndarray
    labels: np.ndarray
    last_rv: np.ndarray
    dates: list[str]

    def __len__(self) -> int:
        return len(self.x)


def quality_set(run: runs.Run, n: int, data: Store | None = None, *, seed: int = 0) -> QualitySet:
    """Up to ``n`` windows of the run's test dates, the same number from each (sampled uniformly), with labels.

    Raises ``DataError``/``StoreError`` when the data is unreachable or has no window.
    """
    cfg = run.config
    if not cfg.splits.test:
        raise DataError(f"run {run.ref.name} has no test dates in config.json; re-create it with tthf-train")
    data = data or as_store(cfg.data_root)
    rng = np.random.default_rng(seed)
    per_date = -(-n // len(cfg.splits.test))
    xs, ys, rvs = [], [], []
    for iso in cfg.splits.test:
        scaled, mask, labels = _labelled_day(run, data, dt.date.fromisoformat(iso))
        sym, minute = windows.window_positions(mask, cfg.model.seq_len, 1)
        take = np.sort(rng.choice(len(sym), size=min(per_date, len(sym)), replace=False))
        x = np.empty((len(take), cfg.model.seq_len, scaled.shape[2]), dtype=np.float32)
        windows.gather_windows(scaled, sym[take], minute[take], x, seq_len=cfg.model.seq_len)
        xs.append(x)
        ys.append(labels[sym[take], minute[take]])
        rvs.append(last_rv(labels[:, :, 1])[sym[take], minute[take]])
    if not sum(len(x) for x in xs):
        raise DataError(f"the test dates of run {run.ref.name} have no valid window under {data.uri()}")
    out = QualitySet(np.concatenate(xs)[:n], np.concatenate(ys)[:n], np.concatenate(rvs)[:n], list(cfg.splits.test))
    log.info("forecast quality: %d held-out windows from %d dates", len(out), len(out.dates))
    return out


def _labelled_day(run: runs.Run, data: Store, date: dt.date) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scaled (S, M, F), mask (S, M), labels (S, M, 2)) of one test date on the run's input grid.

    A run without feature files builds both from the raw bars in one pass (training's code); a
    run with them builds its inputs as tthf-run does (``DayHost``) and reads its realized values
    where tthf-eval does (``realized``: the files' ``[labels]``, else the raw bars), on the
    same symbols.
    """
    cfg = run.config
    if cfg.feature_files is None:
        day = build_day(read_day(data, date, calendar=cfg.calendar), date, calendar=cfg.calendar)
        return run.load_scalers().transform_day(day, cfg.feature_names), day.mask, day.labels
    feats = DayHost(run, data).build(date)
    store, files = label_source(cfg, data)
    real = realized(store, date, cfg.calendar, files, symbols=feats.symbols)
    if real.symbols != feats.symbols:
        raise DataError(f"{data.uri()}: {date} gives different symbols for inputs and labels; rebuild the data")
    return feats.scaled, feats.mask, real.labels


def scores(pred: Outputs, qs: QualitySet, run: runs.Run) -> dict[str, float | None]:
    """The judged scores of ``pred`` on ``qs``, from ``heldout_metrics`` (training's and tthf-eval's function)."""
    cfg = run.config.model
    stacked = np.stack([pred["ret_1h"], pred["vol_10m"], pred["ret_conf"], pred["vol_conf"]], axis=1)
    m = heldout_metrics(
        stacked, qs.labels, qs.last_rv, floor=vol_floor(cfg), ret_band=cfg.ret_band, vol_band=cfg.vol_band
    )
    return {
        "ret_1h_ic": m["ret_1h"]["model"]["ic"],
        "ret_1h_rank_ic": m["ret_1h"]["model"]["rank_ic"],
        "vol_10m_qlike": m["vol_10m"]["model"]["qlike"],
        "ret_conf_calibration_gap": m["ret_conf"]["max_quintile_calibration_gap"],
        "vol_conf_calibration_gap": m["vol_conf"]["max_quintile_calibration_gap"],
    }


def judge(fp32: dict[str, float | None], variant: dict[str, float | None], n: int) -> dict[str, Any]:
    """The variant's forecast-quality record: each score for fp32 and the variant, the difference,
    the bar and whether it passed; ``failed`` lists the misses ('' when none). A score that is
    undefined for fp32 (too few labelled windows) is not judged and says so."""
    rows: dict[str, Any] = {}
    failed = []
    for name, bar in QUALITY_BARS.items():
        a, b = fp32[name], variant[name]
        if a is None:
            rows[name] = {"fp32": None, "variant": b, "passed": None}
            continue
        ok = b is not None and bar.allows(a, b)
        rows[name] = {"fp32": a, "variant": b, "delta": None if b is None else b - a, "passed": ok, **bar.__dict__}
        if not ok:
            failed.append(f"{name} {b} vs fp32 {a:.6g} ({_bar_text(bar)})")
    return {"windows": n, "scores": rows, "failed": "; ".join(failed)}


def _bar_text(bar: QualityBar) -> str:
    return f"bar ±{bar.relative:.0%} of fp32" if bar.relative is not None else f"bar ±{bar.absolute}"


#: windows per predict call while scoring (bounds the reference's memory)
CHUNK = 4096


class Judge:
    """The held-out set and fp32's scores on it, computed on the first variant judged (an export whose
    variants are all unavailable pays nothing) and applied to each; without held-out data every
    variant's record says it was not judged, and why."""

    def __init__(self, run: runs.Run, n: int, data: Store | None, *, seed: int) -> None:
        self.run, self.n, self.data, self.seed = run, n, data, seed

    @functools.cached_property
    def reference(self) -> tuple[QualitySet | None, dict[str, float | None], str]:
        """(the held-out set, fp32's scores on it, '') or (None, {}, why not)."""
        if self.n == 0:
            return None, {}, "disabled with --quality-windows 0"
        try:
            qs = quality_set(self.run, self.n, self.data, seed=self.seed)
        except (DataError, StoreError) as exc:
            log.warning("forecast quality not judged: %s", exc)
            return None, {}, str(exc)
        fp32 = reference_backend(self.run)
        return qs, scores(predict_in_chunks(fp32.predict, qs.x, CHUNK), qs, self.run), ""

    def __call__(self, backend: Backend) -> dict[str, Any]:
        qs, fp32, why_not = self.reference
        if qs is None:
            return {"windows": 0, "scores": {}, "failed": "", "not_judged": why_not}
        pred = predict_in_chunks(backend.predict, qs.x, CHUNK)
        return {**judge(fp32, scores(pred, qs, self.run), len(qs)), "dates": qs.dates}

"""``tthf-explain``'s library function: attribute one or several forecasts to their inputs.

A forecast is (date, symbol, minute): the window whose last minute starts at HH:MM exchange
time, the row tthf-run writes with that ``ts``. Its inputs are built as tthf-run builds them;
a run with a PyTorch reference (tthf's own network) is explained by integrated gradients on
it in fp32, an ONNX-only import by occlusion through its serving backend
(``attribution``). Each forecast gets a heatmap PNG and the whole call one JSON, written to
``out``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tthf.engine import windows
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data.calendar import timezone
from tthf.engine.explain.attribution import Attributions, completeness, integrated_gradients, occlusion
from tthf.engine.explain.backend import serving_backend
from tthf.engine.explain.heatmap import heatmap_png
from tthf.engine.features import ScaledDayFeatures
from tthf.engine.model.interface import output_scale
from tthf.engine.runs import Run
from tthf.engine.runtime.day import DayHost
from tthf.engine.store import Store
from tthf.errors import UsageError


@dataclass(frozen=True)
class Forecast:
    symbol: str
    minute: str  # HH:MM exchange time
    ts: str  # its UTC minute, as in the predictions table


@dataclass(frozen=True)
class Explained:
    """The forecasts of one call, their attributions and where the files went."""

    run: str
    date: str
    forecasts: list[Forecast]
    feature_names: list[str]
    attributions: Attributions
    completeness: dict[str, Any]
    files: list[str]
    seconds: float

    def top(self, i: int, output: str, k: int = 8) -> list[tuple[str, int, float]]:
        """The ``k`` cells of forecast ``i`` with the largest |attribution| to ``output``: (feature, lag, value)."""
        cells = self.attributions.cells[output][i]  # (T, F), row T-1 is lag 0
        t, f = cells.shape
        order = np.argsort(-np.abs(cells), axis=None)[:k]
        return [(self.feature_names[int(c) % f], t - 1 - int(c) // f, float(cells.flat[c])) for c in order]

    def to_json(self, k: int = 10) -> dict[str, Any]:
        a = self.attributions
        return {
            "run": self.run,
            "date": self.date,
            "method": a.method,
            "baseline": "every feature at its scaler's centre (0 in scaled units), at every lag",
            "completeness": self.completeness,
            "forecasts": [
                {
                    **vars(f),
                    "outputs": {n: float(a.outputs[n][i]) for n in OUTPUT_NAMES},
                    "baseline_outputs": {n: float(a.baseline[n][i]) for n in OUTPUT_NAMES},
                    "top": {n: [list(c) for c in self.top(i, n, k)] for n in OUTPUT_NAMES},
                }
                for i, f in enumerate(self.forecasts)
            ],
            "files": self.files,
            "seconds": round(self.seconds, 2),
        }


def explain_forecasts(
    run: Run, data: Store, date: dt.date, symbols: list[str], minutes: list[str], out: Store | None = None
) -> Explained:
    """Attribute every (symbol, minute) forecast of ``date``; heatmaps and ``explain.json`` go to ``out``."""
    started = time.perf_counter()
    host = DayHost(run, data)
    feats = host.features(host.read(date)).features
    assert feats is not None
    forecasts, x = _windows(run, feats, symbols, minutes)
    if run.config.imported is None:
        attr = integrated_gradients(run.load_model(), x)
    else:
        attr = occlusion(serving_backend(run).predict, x)
    scales = {n: output_scale(n, run.config.model) for n in OUTPUT_NAMES}
    explained = Explained(
        run.ref.name, date.isoformat(), forecasts, list(feats.feature_names), attr, completeness(attr, scales), [], 0.0
    )
    files = _write(explained, out) if out is not None else []
    return Explained(**{**vars(explained), "files": files, "seconds": time.perf_counter() - started})


def _windows(
    run: Run, feats: ScaledDayFeatures, symbols: list[str], minutes: list[str]
) -> tuple[list[Forecast], np.ndarray]:
    seq_len = run.config.model.seq_len
    tz = timezone(run.config.calendar)
    local = {
        m.astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc).astimezone(tz).strftime("%H:%M"): i
        for i, m in enumerate(feats.minutes)
    }
    forecasts, sym_idx, minute_idx = [], [], []
    for symbol in symbols:
        if symbol not in feats.symbols:
            raise UsageError(
                f"{symbol!r} has no rows on {feats.date}; symbols there: {', '.join(feats.symbols[:8])}..."
            )
        s = feats.symbols.index(symbol)
        for minute in minutes:
            if minute not in local:
                raise UsageError(
                    f"--minute {minute!r} is not a minute of {feats.date}'s session "
                    f"({min(local)}-{max(local)} exchange time, HH:MM)"
                )
            m = local[minute]
            if m < seq_len - 1 or not feats.mask[s, m - seq_len + 1 : m + 1].all():
                raise UsageError(
                    f"{symbol} at {minute} on {feats.date} has no forecast: its {seq_len} minutes up to {minute} "
                    "are not all usable (the session's first minutes, a halt or missing quotes)"
                )
            forecasts.append(Forecast(symbol, minute, str(feats.minutes[m].astype("datetime64[s]")) + "Z"))
            sym_idx.append(s)
            minute_idx.append(m)
    x = np.empty((len(forecasts), seq_len, feats.scaled.shape[2]), np.float32)
    windows.gather_windows(
        feats.scaled, np.array(sym_idx, np.int32), np.array(minute_idx, np.int32), x, seq_len=seq_len
    )
    return forecasts, x


def _write(explained: Explained, out: Store) -> list[str]:
    written = []
    for i, f in enumerate(explained.forecasts):
        key = f"{explained.date}_{f.symbol}_{f.minute.replace(':', '')}.png"
        cells = {n: explained.attributions.cells[n][i] for n in OUTPUT_NAMES}
        title = f"{explained.run} {f.symbol} {explained.date} {f.minute}"
        out.write_bytes(key, heatmap_png(title, cells, explained.feature_names, explained.attributions.method))
        written.append(out.uri(key))
    key = f"{explained.date}_explain.json"
    written.append(out.uri(key))
    out.write_text(key, json.dumps({**explained.to_json(), "files": written}, indent=1) + "\n")
    return written

"""The original pipeline, written the straightforward way, as the benchmarks' baseline.

pandas features (groupby + rolling, one column at a time), a PyTorch ``Dataset`` of
windows behind a ``DataLoader`` with the default collate, the same
``ThreeHeadedTransformer`` with the run's weights, eager (fp32 on CPU, autocast on
CUDA), and one process per date. It shares nothing with tthf's fast path (no polars
features, no C++ kernel, no exported model): only the calendar, the checkpoint loader
and the run's ``config.json`` / ``scalers.json``. tests/test_baseline.py checks that it
computes the same features and predictions as tthf within tolerance, so a speed ratio
against it compares two ways of getting the same answers.
"""

from __future__ import annotations

from baseline.features import NEUTRAL, build_features
from baseline.pipeline import BaselineResult, predict_date, run_baseline

__all__ = ["NEUTRAL", "BaselineResult", "build_features", "predict_date", "run_baseline"]

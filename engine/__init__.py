"""The engine, by pipeline stage: ``data`` -> ``features`` -> ``model`` -> ``training`` / ``runtime``.

The public API is re-exported here lazily (as CTranslate2's package face does), so
``import tthf.engine`` stays free of torch and polars until a name is used::

    from tthf.engine import open_run, run_inference, RunOptions, RealtimePredictor

docs/architecture.md maps every module and the import rule between stages.
"""

from __future__ import annotations

from tthf._lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "Store": "tthf.engine.store",
    "open_store": "tthf.engine.store",
    "Run": "tthf.engine.runs",
    "find_run": "tthf.engine.runs",
    "open_run": "tthf.engine.runs",
    "list_runs": "tthf.engine.runs",
    "SynthConfig": "tthf.engine.data.synth",
    "generate_market": "tthf.engine.data.synth",
    "read_day": "tthf.engine.data.marketdata",
    "write_day": "tthf.engine.data.marketdata",
    "list_dates": "tthf.engine.data.marketdata",
    "parse_dates": "tthf.engine.data.dates",
    "build_day": "tthf.engine.features",
    "DayFeatures": "tthf.engine.features",
    "FEATURE_NAMES": "tthf.engine.features",
    "Scalers": "tthf.engine.features",
    "ThreeHeadedTransformer": "tthf.engine.model.network",
    "train_run": "tthf.engine.training.train",
    "open_backend": "tthf.engine.runtime.backends",
    "BACKENDS": "tthf.engine.runtime.backends",
    "RunOptions": "tthf.engine.runtime.options",
    "run_inference": "tthf.engine.runtime.batch",
    "RealtimePredictor": "tthf.engine.runtime.realtime",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("tthf.engine", _EXPORTS, globals())

"""Stage 10, explanation: what a run's model looks at.

``importance`` (permutation importance of features, families and lags), ``samples`` (the
forecasts an explanation uses), ``attention`` (mean attention of tthf's network),
``section`` (``explain_dates``, the section ``tthf-eval --explain`` adds to metrics.json),
``attribution`` (integrated gradients and occlusion of single forecasts) and ``forecasts``
(``explain_forecasts``, the library function behind ``tthf-explain``). It needs both the
evaluation (outcomes, scores) and the runtime (backends, a date's inputs).
"""

"""Stage 5, evaluation: a run's predictions scored against what happened, next to naive baselines.

``array_scores`` (statistics on plain arrays, also used by training's held-out metrics),
``baselines``, ``realized`` (labels from the raw data by training's code), ``panel`` (one
date's forecasts, targets and baselines on one grid), ``panel_scores`` (a date's panel to
its scores, then the dates pooled), ``report`` (figures and report.html) and ``evaluate``
(``evaluate_run``, the library function behind ``tthf-eval``). Importing the package
imports none of them, so training can use ``array_scores`` without matplotlib.
"""

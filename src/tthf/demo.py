"""The quick start's main job on embedded defaults: market -> run "jennifer" -> export -> predictions -> evaluation.

Every step is reused when its output already exists, so the demo can be rerun cheaply
and resumes where an interrupted one stopped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tthf.engine import runs
from tthf.engine.data.marketdata import list_dates
from tthf.engine.data.synth import SynthConfig, generate_market
from tthf.engine.runtime.batch import run_inference
from tthf.engine.runtime.options import RunOptions
from tthf.engine.runtime.recorder import InferenceSummary
from tthf.engine.store import open_store
from tthf.errors import RunNotFoundError

if TYPE_CHECKING:
    from tthf.engine.evaluation.evaluate import EvalResult

log = logging.getLogger("tthf.demo")


@dataclass
class DemoResult:
    data_root: str
    run: runs.Run
    metrics: dict[str, Any]
    export_message: str
    inference: InferenceSummary
    evaluation: EvalResult


def run_demo(
    workdir: str | Path = ".",
    *,
    run_name: str = "jennifer",
    synth: SynthConfig | None = None,
    backend: str = "auto",
    overrides: dict[str, Any] | None = None,
) -> DemoResult:
    """Generate (or reuse) the demo market, train (or reuse) the run, export it, predict its test dates densely
    and score those predictions (tthf-eval's report under the run's ``evaluation/heldout/``)."""
    from tthf.engine.evaluation.evaluate import evaluate_run
    from tthf.engine.training.train import train_run
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig

    workdir = Path(workdir)
    data_root, store = str(workdir / "data" / "market"), str(workdir / "runs")
    if list_dates(data_root):
        log.info("reusing the market under %s", data_root)
    else:
        log.info("step 1/4: generating the demo market under %s", data_root)
        log.info("%s", generate_market(synth or SynthConfig(), data_root))
    try:
        run = runs.Run.open(runs.find_run(store, run_name, experiment=runs.DEFAULT_EXPERIMENT))
        log.info("reusing run %s (pass a new workdir or delete it to retrain)", run.ref.name)
    except RunNotFoundError:
        log.info("step 2/4: training run %r on %s", run_name, data_root)
        run = train_run(data_root, store, run_name, overrides=overrides).run
    metrics = json.loads(run.read_text(runs.METRICS))
    log.info("step 3/4: exporting %s to ONNX (fp32 and fp16) and validating against PyTorch", run.ref.name)
    exported = export_run(run, ExportConfig(), data=data_root)
    test = run.config.splits.test
    log.info("step 4/4: dense predictions for the held-out dates %s..%s", test[0], test[-1])
    summary = run_inference(run, RunOptions(dates=f"{test[0]}:{test[-1]}", dense=True, backend=backend))
    log.info("last step: scoring the held-out predictions against what happened (tthf-eval)")
    evaluation = evaluate_run(run, f"{test[0]}:{test[-1]}", data=data_root, name="heldout")
    export_message = "\n".join(filter(None, (exported.engine_message, exported.variants_line())))
    return DemoResult(open_store(data_root).uri(), run, metrics, export_message, summary, evaluation)

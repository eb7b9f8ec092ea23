"""The service on TensorRT: the predictor's preallocated, CUDA-graph fixed batch serves every minute.

On a CUDA host with TensorRT (``gpu``): a day's first hour through the service equals the
CPU fp32 reference (``tthf-run --dense`` on torch) at the fp16 tolerances, and the minutes
ran through the fixed batch's graph. Skipped with its reason elsewhere.
"""

from __future__ import annotations

import polars as pl
import pytest
import torch

from tthf.engine import runs
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data.marketdata import read_day
from tthf.engine.runtime.realtime import RealtimePredictor
from tthf.engine.serving.client import day_sends, plan
from tthf.engine.serving.service import Reply, Service
from tthf.engine.testing import DAYS, dense_batch, make_data, make_run

DAY = DAYS[1]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this host"),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[runs.Run, pl.DataFrame]:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'tthf[gpu-cu12]')")
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig

    base = tmp_path_factory.mktemp("serve-gpu")
    data = make_data(base / "data", n_symbols=12)
    run = make_run(str(base / "runs"), data)
    export_run(run, ExportConfig(opt_batches=(64, 512), max_batch=1024, real_windows=64, random_batches=(3,)))
    return run, read_day(str(data), DAY)


def test_the_service_on_tensorrt_runs_the_fixed_batch_and_matches_the_reference(exported, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tthf.engine.runtime.backends import open_backend
    from tthf.export.api import rebuild_engine
    from tthf.export.validate import compare, enforce, tolerances

    run, raw = exported
    predictor = RealtimePredictor(run, open_backend(run, "tensorrt", rebuild=rebuild_engine), journal=tmp_path)
    service = Service(predictor, grace=None)
    try:
        service.start(DAY)
        box = service.connect_feeder(DAY, "gpu")
        calls = plan(day_sends(raw, DAY)[:60])
        for call in calls:
            service.submit(box, call.rows, call.minute, call.seq)
        replies = [box.queue.get(timeout=60) for _ in range(1 + len(calls))][1:]
    finally:
        service.stop(5)
    assert all(isinstance(r, Reply) for r in replies)
    got = pl.concat([r.frame for r in replies if isinstance(r, Reply)])
    assert predictor._fixed is not None and predictor._fixed.graph is not None  # the graph served the minutes
    want = dense_batch(run, raw, DAY).filter(pl.col("ts") <= calls[-1].minute)
    assert got.height == want.height > 0 and got.select("ts", "symbol").equals(want.select("ts", "symbol"))
    enforce(
        compare(
            {k: want.get_column(k).to_numpy() for k in OUTPUT_NAMES},
            {k: got.get_column(k).to_numpy() for k in OUTPUT_NAMES},
            artifact="serving",
            backend="tensorrt",
            inputs="first hour",
            precision="fp16",
            tolerance=tolerances("fp16", run.config.model),
        )
    )

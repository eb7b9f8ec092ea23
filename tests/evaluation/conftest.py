"""One tiny real run with dense predictions, shared by the evaluation tests.

20 symbols (enough for forecast deciles) over ``DAYS``, a random-weight model, dense
predictions from the torch backend for the last two days only, so that the first day
has raw data but no predictions file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

N_SYMBOLS = 20


@dataclass(frozen=True)
class TinyRun:
    store: str
    data: Path
    run_id: str
    predicted: str  # the dates spec that has predictions


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    from tthf.engine.runs import open_run
    from tthf.engine.runtime.batch import run_inference
    from tthf.engine.runtime.options import RunOptions
    from tthf.engine.testing import DAYS, make_data, make_run

    root = tmp_path_factory.mktemp("eval")
    data = make_data(root / "data", n_symbols=N_SYMBOLS)
    store = str(root / "runs")
    make_run(store, data)
    predicted = f"{DAYS[1]}:{DAYS[2]}"
    summary = run_inference(open_run(store, "jennifer"), RunOptions(dates=predicted, dense=True, backend="torch"))
    assert [r.status for r in summary.results] == ["ok", "ok"]
    return TinyRun(store, data, "jennifer", predicted)

"""A small trained run on the synthetic market, shared by the explanation tests.

The known answers need a model that learned the planted structure (docs/data.md,
"Learnable structure"): 40 symbols x 13 days of the demo's market and the tests' tiny
network trained for 3 epochs learn it (held-out ret_1h IC about 0.2) in about 5 s on two
cores. A random-weights twin on the same data is the sanity check's model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tthf.engine.runs import Run

TINY = {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """The explanations run the unexported runs' torch model ~100 times over small batches: on the
    shared 2-core machine one intra-op thread was 18x faster than two (2.7 s against 48 s a section)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class Trained:
    run: Run
    random: Run  # same data and shape, random weights
    data: str
    test: list[str]  # the held-out dates


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from tthf.engine.data.synth import SynthConfig, generate_market
    from tthf.engine.testing import make_random_run
    from tthf.engine.training.train import train_run

    root = tmp_path_factory.mktemp("explain")
    data = str(root / "data")
    generate_market(SynthConfig(n_symbols=40, end=dt.date(2024, 1, 19)), data)
    overrides = {"epochs": 3, "threads": 1, "max_train_windows": 20_000, **TINY}
    run = train_run(data, str(root / "runs"), "jennifer", overrides=overrides).run
    days = [dt.date.fromisoformat(d) for d in (*run.config.splits.train, *run.config.splits.test)]
    random = make_random_run(str(root / "runs"), data, days, "random", seed=0, **TINY)
    return Trained(run, random, data, list(run.config.splits.test))


def _section(run: Run, dates: list[str]) -> dict[str, Any]:
    from tthf.engine.explain.samples import Sampling
    from tthf.engine.explain.section import explain_dates
    from tthf.engine.store import open_store

    return explain_dates(run, open_store(run.config.data_root), dates, Sampling(minute_step=30))


@pytest.fixture(scope="session")
def section() -> Callable[[Run, list[str]], dict[str, Any]]:
    """tthf-eval --explain's section of a run on some dates, every 30th minute (about 500 windows a date)."""
    return _section


@pytest.fixture(scope="session")
def trained_section(trained: Trained) -> dict[str, Any]:
    """The trained run's section on its held-out dates."""
    return _section(trained.run, trained.test)

"""Shared set-up of the benchmarks: collection, full vs smoke mode, the market and the run.

Modes (docs in bench/README.md):

- **full** (``bash bench/run.sh``): real sizes, pytest-benchmark timing, results in
  bench/results.json, then bench/report.py writes bench/RESULTS.md.
- **smoke** (``--benchmark-disable``, as .ci/run does, or ``TTHF_BENCH_SMOKE=1``): every
  benchmark body runs once on tiny sizes with every correctness assert on, so the
  suite cannot rot; the whole folder takes well under a minute or two.

Sizes in full mode: ``TTHF_BENCH_SYMBOLS`` symbols (default 1000; also read by
bench_windows.py) and ``TTHF_BENCH_DATES`` dates (default 2). The market is written once
per session with tthf.engine.data.synth into a temporary folder; the run has the default model
size with random weights (seed 0): speed does not depend on the weights, and the
baseline's equality with tthf is checked on the same weights. The inference benchmark
also measures a production-size model (``PRODUCTION_MODEL``, random weights, seed 0),
exported the same way: the default model is so small that its speed is mostly per-op
overhead, users' models are larger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from benchlib import cpu_flags, cpu_peaks

if TYPE_CHECKING:
    from tthf.engine.runs import Run

SMOKE_SYMBOLS = 24
RUN_ID = "bench"
#: ModelConfig overrides of the production-size model (issue 14): about 50 MFLOP per window
PRODUCTION_MODEL = {"d_model": 128, "n_layers": 4, "n_heads": 8, "d_ff": 512}


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    """Collect bench_*.py as test modules (pytest's default pattern is test_*.py).

    A file named on the command line is collected by pytest itself already.
    """
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def smoke_mode(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_disable", False)) or os.environ.get("TTHF_BENCH_SMOKE") == "1"


def pytest_configure(config: pytest.Config) -> None:
    if smoke_mode(config):
        os.environ["TTHF_BENCH_SYMBOLS"] = str(SMOKE_SYMBOLS)  # bench_windows.py reads it too


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """What RESULTS.md needs to describe the machine, recorded in the JSON itself."""
    import numpy
    import pandas
    import polars
    import torch

    versions = {
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "polars": polars.__version__,
        "pandas": pandas.__version__,
    }
    for module in ("onnxruntime", "openvino"):
        with contextlib.suppress(ImportError):
            versions[module] = __import__(module).__version__
    info: dict[str, object] = {
        "cores_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "cpu_flags": sorted(
            f
            for f in cpu_flags()
            if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8")
        ),
        "cpu_peaks": cpu_peaks(len(os.sched_getaffinity(0))),
        "versions": versions,
        "smoke": smoke_mode(config),
        "symbols": int(os.environ.get("TTHF_BENCH_SYMBOLS", "1000")),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    machine_info["tthf"] = info


@dataclass(frozen=True)
class Sizes:
    smoke: bool
    symbols: int
    dates: int

    @property
    def rounds(self) -> int:
        """Rounds of the slow, whole-pipeline benchmarks."""
        return 1 if self.smoke else 3


@pytest.fixture(scope="session")
def sizes(pytestconfig: pytest.Config) -> Sizes:
    smoke = smoke_mode(pytestconfig)
    symbols = int(os.environ.get("TTHF_BENCH_SYMBOLS", "1000"))
    dates = 2 if smoke else int(os.environ.get("TTHF_BENCH_DATES", "2"))
    return Sizes(smoke, symbols, dates)


@dataclass(frozen=True)
class Market:
    root: Path
    dates: list[dt.date]  # the first one also fits the scalers
    symbols: int


@pytest.fixture(scope="session")
def market(sizes: Sizes, tmp_path_factory: pytest.TempPathFactory) -> Market:
    from tthf.engine.data.marketdata import write_day
    from tthf.engine.data.synth import SynthConfig, generate_day

    cfg = SynthConfig(n_symbols=sizes.symbols, start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 29), seed=11)
    root = tmp_path_factory.mktemp("market")
    days = cfg.days[: sizes.dates]
    for day in days:
        write_day(str(root), day, generate_day(cfg, day))
    return Market(root, days, sizes.symbols)


@dataclass(frozen=True)
class BenchRun:
    store: str
    run: Run
    path: Path


def _exported_run(market: Market, store: Path, run_id: str, smoke: bool, **model: Any) -> BenchRun:
    """A run with random weights (seed 0) and ``model``'s ModelConfig overrides, exported (ONNX; TensorRT where possible)."""
    from tthf.engine.testing import make_random_run
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig

    run = make_random_run(str(store), market.root, market.dates, run_id, **model)
    # int8 built too (bench_inference's openvino-int8 rows); forecast quality is judged on a trained run, not here
    config = ExportConfig(real_windows=64 if smoke else 512, int8=True, quality_windows=0)
    if smoke:
        config = dataclasses.replace(config, random_batches=(1, 37))
    export_run(run, config, data=str(market.root))
    return BenchRun(str(store), run, Path(run.ref.uri))


@pytest.fixture(scope="session")
def bench_run(market: Market, tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    """The default model size, exported with the export's full validation."""
    return _exported_run(market, tmp_path_factory.mktemp("store"), RUN_ID, smoke=False)


@pytest.fixture(scope="session")
def production_run(market: Market, sizes: Sizes, tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    """The production-size model (``PRODUCTION_MODEL``); in smoke mode validated on fewer windows at export."""
    return _exported_run(
        market, tmp_path_factory.mktemp("store"), f"{RUN_ID}-production", sizes.smoke, **PRODUCTION_MODEL
    )

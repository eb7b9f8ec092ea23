"""Real time on TensorRT: one fixed all-symbols batch, allocated once, one stream, replayed as a CUDA graph.

Issue 10, item 7. On the CPU: the pure choices (which profile, how many rows) and the
predictor's use of a backend's ``FixedBatch`` (windows written into its rows, ``run(n)`` read
back, a new batch only when the day's symbols outgrow it), with a stand-in batch over the
torch reference. On a CUDA host with TensorRT (``gpu``): the graph's outputs equal the
non-graph enqueue's bit for bit, a minute allocates no device memory, and the predictor on
TensorRT matches the CPU fp32 reference at the fp16 tolerances.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from tthf.engine import runs
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data.calendar import session_minutes
from tthf.engine.data.marketdata import read_day
from tthf.engine.model.interface import Outputs
from tthf.engine.runtime.backends import TorchBackend
from tthf.engine.runtime.backends.base import Backend, BackendSpec, FixedBatch, Needs
from tthf.engine.runtime.backends.tensorrt import FIXED_BATCH_STEP, best_profile, fixed_capacity
from tthf.engine.runtime.realtime import RealtimePredictor
from tthf.engine.testing import DAYS, make_data, make_run
from tthf.errors import BackendError

DAY = DAYS[1]
PROFILES = [(1, 64, 8194), (1, 512, 8194)]


def test_the_profile_nearest_to_the_batch_is_chosen() -> None:
    assert best_profile(37, PROFILES) == 0
    assert best_profile(1000, PROFILES) == 1
    assert best_profile(288, PROFILES) == 0 and best_profile(289, PROFILES) == 1  # nearest opt, ties to the first
    with pytest.raises(BackendError, match="outside every optimization profile"):
        best_profile(9000, PROFILES)


def test_the_fixed_batch_is_rounded_up_inside_the_profiles() -> None:
    assert fixed_capacity(1, PROFILES) == FIXED_BATCH_STEP
    assert fixed_capacity(64, PROFILES) == 64 and fixed_capacity(65, PROFILES) == 128
    assert fixed_capacity(1000, PROFILES) == 1024
    assert (
        fixed_capacity(8190, PROFILES) == 8192 and fixed_capacity(8193, PROFILES) == 8194
    )  # the last step is cut at the profiles' max
    assert fixed_capacity(8195, PROFILES) is None  # past every profile: real time uses predict
    assert fixed_capacity(3, [(16, 32, 64)]) == 64 and fixed_capacity(3, [(16, 32, 40)]) == 40


class _ReferenceBatch(FixedBatch):
    """A fixed batch over the CPU reference: runs every row, as a GPU batch does, and returns the first n."""

    def __init__(self, reference: TorchBackend, capacity: int, shape: tuple[int, int]) -> None:
        self.reference, self.capacity = reference, capacity
        self.inputs = np.full((capacity, *shape), np.nan, dtype=np.float32)  # unwritten rows stand out
        self.calls: list[int] = []

    def run(self, n: int) -> Outputs:
        self.calls.append(n)
        assert not np.isnan(self.inputs[:n]).any(), "the predictor left a row it asked for unwritten"
        rows = np.nan_to_num(self.inputs)
        return {k: v[:n].copy() for k, v in self.reference.predict(rows).items()}


class _FixedBackend(Backend):
    detail = "cpu"

    def __init__(self, reference: TorchBackend, shape: tuple[int, int]) -> None:
        self.reference, self.shape = reference, shape
        self.made: list[_ReferenceBatch] = []

    def predict(self, batch: np.ndarray) -> Outputs:
        raise AssertionError("a backend with a fixed batch is not asked to predict")

    def fixed_batch(self, rows: int) -> FixedBatch:
        self.made.append(_ReferenceBatch(self.reference, rows + 2, self.shape))
        return self.made[-1]


_FixedBackend.spec = BackendSpec("fixed-reference", _FixedBackend, precision="fp32", device="cpu", needs=Needs())


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[runs.Run, pl.DataFrame]:
    base = tmp_path_factory.mktemp("rtgpu")
    data = make_data(base / "data", n_symbols=5)
    run = make_run(str(base / "runs"), data)
    return run, read_day(str(data), DAY)


def _minute(t: int) -> dt.datetime:
    return session_minutes(DAY)[t].astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc)


def _feed(predictor: RealtimePredictor, raw: pl.DataFrame, minutes: list[int]) -> list[pl.DataFrame]:
    predictor.reset(DAY)
    predictor.update(raw.filter(pl.col("ts") < _minute(minutes[0])), close=_minute(minutes[0] - 1))
    return [predictor.update(raw.filter(pl.col("ts") == _minute(t)), close=_minute(t)).predictions for t in minutes]


def _assert_same_rows(got: list[pl.DataFrame], want: list[pl.DataFrame], rtol: float, atol: float) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.height == w.height > 0
        assert g.select("ts", "symbol").equals(w.select("ts", "symbol"))
        for name in OUTPUT_NAMES:
            np.testing.assert_allclose(g.get_column(name).to_numpy(), w.get_column(name).to_numpy(), rtol, atol)


def test_the_predictor_runs_a_backends_fixed_batch(day) -> None:
    run, raw = day
    reference = TorchBackend(run.load_model(), device="cpu")
    cfg = run.config.model
    fixed = _FixedBackend(reference, (cfg.seq_len, cfg.n_features))
    minutes = [40, 41, 42, 43]
    got = _feed(RealtimePredictor(run, fixed), raw, minutes)
    want = _feed(RealtimePredictor(run, reference), raw, minutes)
    _assert_same_rows(got, want, rtol=1e-5, atol=1e-6)  # the reference at two batch sizes
    assert len(fixed.made) == 1  # made once for the day's symbols, reused every minute
    assert fixed.made[0].calls[-len(got) :] == [g.height for g in got]  # before: the catch-up to minute 39


def test_the_fixed_batch_is_remade_only_when_the_symbols_outgrow_it(day) -> None:
    run, raw = day
    cfg = run.config.model
    fixed = _FixedBackend(TorchBackend(run.load_model(), device="cpu"), (cfg.seq_len, cfg.n_features))
    predictor = RealtimePredictor(run, fixed)
    symbols = sorted(raw.get_column("symbol").unique())
    predictor.reset(DAY)
    predictor.update(raw.filter((pl.col("ts") <= _minute(40)) & pl.col("symbol").is_in(symbols[:2])), close=_minute(40))
    assert [b.capacity for b in fixed.made] == [2 + 2]
    predictor.update(raw.filter((pl.col("ts") == _minute(41)) & pl.col("symbol").is_in(symbols[:2])), close=_minute(41))
    assert len(fixed.made) == 1  # same symbols: the same batch
    predictor.update(raw.filter((pl.col("ts") > _minute(41)) & (pl.col("ts") <= _minute(200))), close=_minute(200))
    predictor.update(raw.filter(pl.col("ts") == _minute(201)), close=_minute(201))
    assert len(predictor.grid.symbols) == len(symbols) == 5
    assert [b.capacity for b in fixed.made] == [4, 7]  # remade once, when 5 symbols outgrew 4 rows


# ---------------------------------------------------------------------------------------
# on a CUDA host with TensorRT


def _tensorrt(run: runs.Run) -> Any:
    from tthf.engine.runtime.backends.tensorrt import TensorRTBackend, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT is not available: {reason}")
    return TensorRTBackend.from_run(run)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[runs.Run, pl.DataFrame]:
    from tthf.export.api import export_run
    from tthf.export.config import ExportConfig

    base = tmp_path_factory.mktemp("rtgpu-export")
    data = make_data(base / "data", n_symbols=12)
    run = make_run(str(base / "runs"), data)
    if torch.cuda.is_available():
        export_run(run, ExportConfig(opt_batches=(64, 512), max_batch=1024, real_windows=64, random_batches=(3,)))
    return run, read_day(str(data), DAY)


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available on this host (torch.cuda.is_available() is False)"
)


def _kernels(run: runs.Run, rows: int) -> np.ndarray:
    cfg = run.config.model
    return np.random.default_rng(5).standard_normal((rows, cfg.seq_len, cfg.n_features)).astype(np.float32)


@pytest.mark.gpu
@needs_cuda
def test_the_cuda_graph_equals_the_ordinary_enqueue(exported) -> None:
    from tthf.engine.runtime.backends.tensorrt import TensorRTFixedBatch

    run, _ = exported
    backend = _tensorrt(run)
    graphed = TensorRTFixedBatch(backend.compiled, 128, graph=True)
    plain = TensorRTFixedBatch(backend.compiled, 128, graph=False)
    assert graphed.graph is not None, f"TensorRT refused the capture: {graphed.graph_error}"
    previous = None
    for minute in range(3):  # new inputs each minute through the same captured addresses
        x = _kernels(run, 128) * (1 + minute)
        graphed.inputs[...] = x
        plain.inputs[...] = x
        got, want = graphed.run(100), plain.run(100)
        for name in OUTPUT_NAMES:
            np.testing.assert_array_equal(got[name], want[name])
        if previous is not None:  # the replay read this minute's inputs, not the captured ones
            assert not np.array_equal(got[OUTPUT_NAMES[0]], previous)
        previous = got[OUTPUT_NAMES[0]]


@pytest.mark.gpu
@needs_cuda
def test_a_minute_allocates_nothing_and_matches_predict(exported) -> None:
    from tthf.engine.runtime.backends.tensorrt import TensorRTFixedBatch
    from tthf.export.validate import compare, enforce, tolerances

    run, _ = exported
    backend = _tensorrt(run)
    batch = TensorRTFixedBatch(backend.compiled, 64, graph=True)
    x = _kernels(run, 64)
    batch.inputs[...] = x
    batch.run(64)
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    for _ in range(100):
        got = batch.run(50)
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before
    want = backend.predict(x[:50])
    enforce(
        compare(
            want,
            got,
            artifact="fixed batch",
            backend="tensorrt",
            inputs="random@50",
            precision="fp16",
            tolerance=tolerances("fp16", run.config.model),
        )
    )


@pytest.mark.gpu
@needs_cuda
def test_realtime_on_tensorrt_matches_the_cpu_reference(exported) -> None:
    from tthf.export.validate import compare, enforce, tolerances

    run, raw = exported
    backend = _tensorrt(run)
    minutes = [40, 41, 42, 43, 44]
    predictor = RealtimePredictor(run, backend)
    got = _feed(predictor, raw, minutes)
    assert predictor._fixed is not None and predictor._fixed.graph is not None  # the graph served every minute
    want = _feed(RealtimePredictor(run, TorchBackend(run.load_model(), device="cpu")), raw, minutes)
    for t, g, w in zip(minutes, got, want, strict=True):
        assert g.height == w.height > 0 and g.select("ts", "symbol").equals(w.select("ts", "symbol"))
        enforce(
            compare(
                {k: w.get_column(k).to_numpy() for k in OUTPUT_NAMES},
                {k: g.get_column(k).to_numpy() for k in OUTPUT_NAMES},
                artifact="realtime",
                backend="tensorrt",
                inputs=f"minute {t}",
                precision="fp16",
                tolerance=tolerances("fp16", run.config.model),
            )
        )

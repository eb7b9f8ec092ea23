"""Small real fixtures for tests and benchmarks (as ``polars.testing`` / ``numpy.testing``).

A tiny but real run: synthetic raw data on disk, real features and scalers, and a
randomly initialized (untrained) model. Validation compares artifacts with the
reference, so training would add minutes and test nothing more. torch is imported
only by the functions that need it.
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from tthf.engine import runs
from tthf.engine.config import DEFAULT_CALENDAR, OUTPUT_NAMES, ModelConfig, RunConfig, Splits, TrainConfig
from tthf.engine.data.marketdata import partition, read_day, write_day
from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.features import build_day
from tthf.engine.features.scalers import Scalers
from tthf.engine.model.interface import Outputs
from tthf.engine.runtime.backends.base import Backend, exported_onnx
from tthf.engine.runtime.backends.onnxruntime import OnnxRuntimeBackend
from tthf.engine.store import LocalStore, Store, StoreLocator

DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)]
#: the symbol ``with_null_quotes`` adds; it sorts after the synthetic symbols, so theirs keep their grid rows
NO_QUOTE_SYMBOL = "ZZZZ_NQ"
_QUOTE = ("bid", "ask", "bid_size", "ask_size")


def make_data(root: Path, n_symbols: int = 3) -> Path:
    """The three ``DAYS`` of a small synthetic market under ``root``."""
    cfg = SynthConfig(n_symbols=n_symbols, start=DAYS[0], end=DAYS[-1], seed=3)
    for day in DAYS:
        write_day(str(root), day, generate_day(cfg, day))
    return root


def with_null_quotes(raw: pl.DataFrame, *, every: int = 7, no_quote: bool = True) -> pl.DataFrame:
    """``raw`` as a real feed joined from trade and quote bars looks: every ``every``-th row has a
    null quote (no quote update that minute, trades kept) and, with ``no_quote``, one more symbol
    (``NO_QUOTE_SYMBOL``, a copy of the first symbol's rows) whose quotes are all null.
    """
    nth = pl.int_range(pl.len()) % every == every // 2
    out = raw.with_columns(*[pl.when(nth).then(None).otherwise(pl.col(c)).alias(c) for c in _QUOTE])
    if not no_quote:
        return out
    first = raw.get_column("symbol").min()
    copy = raw.filter(pl.col("symbol") == first).with_columns(
        pl.lit(NO_QUOTE_SYMBOL).alias("symbol"), *[pl.lit(None, pl.Float64).alias(c) for c in _QUOTE]
    )
    return pl.concat([out, copy])


def make_random_run(
    store: str,
    data_root: str | Path,
    dates: Sequence[dt.date],
    run_id: str,
    *,
    seed: int = 0,
    calendar: str = DEFAULT_CALENDAR,
    **model: Any,
) -> runs.Run:
    """A complete run with random weights: scalers fitted on ``dates[0]``, splits one date each.

    ``model`` overrides ``ModelConfig`` fields (the defaults are the production defaults).
    """
    import torch

    from tthf.engine.model.network import ThreeHeadedTransformer, save_checkpoint

    train_day = build_day(read_day(str(data_root), dates[0], calendar=calendar), dates[0], calendar=calendar)
    names = list(train_day.feature_names)
    torch.manual_seed(seed)
    model_cfg = ModelConfig(n_features=len(names), **model)
    network = ThreeHeadedTransformer(model_cfg).eval()
    ref = runs.create_run(store, runs.DEFAULT_EXPERIMENT, runs.DEFAULT_MODEL_TYPE, run_id, overwrite=True)
    ref.store.write_bytes(runs.CHECKPOINT, save_checkpoint(network))
    ref.store.write_text(runs.SCALERS, Scalers.fit([train_day]).to_json())
    iso = [d.isoformat() for d in dates]
    splits = Splits(train=iso[:1], val=iso[1:2], test=iso[-1:])
    config = RunConfig(
        model=model_cfg,
        feature_names=names,
        splits=splits,
        train=TrainConfig(),
        data_root=str(data_root),
        calendar=calendar,
    )
    return runs.Run.new(ref, config)


def make_run(store: str, data_root: Path, run_id: str = "jennifer", seed: int = 0, *, d_model: int = 16) -> runs.Run:
    """The tests' tiny run over ``DAYS``: one layer of width ``d_model``."""
    return make_random_run(
        store, data_root, DAYS, run_id, seed=seed, d_model=d_model, n_heads=2, n_layers=1, d_ff=2 * d_model
    )


def free_port() -> int:
    """A free TCP port on the loopback interface (for test servers)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int) -> Any:
    """A moto S3 server on 127.0.0.1 (``moto[server]``, a test dependency), started."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@dataclass(frozen=True)
class StallingData(StoreLocator):
    """A local data root whose reads park chosen dates, so that a test can kill the Ray worker reading one.

    Give a plan ``StallingData(uri, ...).open()`` as its data root: the workers open it from its
    locator, this object. Reading a date of ``always`` (on every attempt) or of ``once`` (on its
    first attempt only: the retry reads it normally) writes a file ``{date}-{pid}`` into
    ``pid_dir`` and sleeps ``seconds``.
    """

    pid_dir: str = ""
    always: tuple[dt.date, ...] = ()
    once: tuple[dt.date, ...] = ()
    seconds: float = 60.0

    def open(self) -> Store:
        return _StallingStore(self)

    def stall(self, prefix: str) -> None:
        """Park the caller when ``prefix`` is the partition of a date to stall."""
        folder = Path(self.pid_dir)
        for day in (*self.always, *self.once):
            if prefix == partition(day) and (day in self.always or not any(folder.glob(f"{day}-*"))):
                (folder / f"{day}-{os.getpid()}").write_text("")
                time.sleep(self.seconds)
                return


class _StallingStore(LocalStore):
    """``StallingData``'s folder: listing a date's partition, the first thing ``read_day`` does, may stall."""

    def __init__(self, locator: StallingData) -> None:
        super().__init__(locator.uri)
        self._locator = locator

    def list(self, prefix: str = "") -> builtins.list[str]:
        self._locator.stall(prefix)
        return super().list(prefix)

    def locator(self) -> StoreLocator:
        return self._locator


def bf16_matmuls() -> Any:
    """A context in which every torch matrix product rounds its operands to bf16 and accumulates in fp32.

    What a CPU with native bf16 does to the exported graph (OpenVINO's bf16 hint runs the
    matrix products in bf16 and keeps the normalizations, softmax and activations in fp32),
    emulated on any CPU, so the bf16 bar can be tested where no bf16 hardware is.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    products = {torch.matmul, torch.bmm, torch.Tensor.__matmul__, torch.nn.functional.linear}

    def rounded(arg: Any) -> Any:
        if isinstance(arg, torch.Tensor) and arg.dtype == torch.float32:
            return arg.to(torch.bfloat16).to(torch.float32)
        return arg

    class _Bf16Products(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func in products:
                args = tuple(rounded(a) for a in args)
            return func(*args, **(kwargs or {}))

    return _Bf16Products()


class ScaledStandIn(Backend):
    """A stand-in backend that runs anywhere: ONNX Runtime's CPU outputs of ``model.onnx`` times ``scale``.

    What tests register (with a ``BackendSpec`` of their own) to see the registry, ``auto`` and
    export's gates and variants take a new backend, and a bar pass or fail it.
    """

    scale: ClassVar[float] = 1.0

    def __init__(self, model: bytes) -> None:
        self.inner = OnnxRuntimeBackend.from_onnx(model)
        self.detail = f"stand-in, outputs x {self.scale}"

    @classmethod
    def from_onnx(cls, model: bytes) -> Backend:
        return cls(model)

    @classmethod
    def from_run(cls, run: runs.Run, **options: Any) -> Backend:
        """The run's exported ``model.onnx``, served as an optional variant is (only when export accepted it)."""
        return cls(exported_onnx(run, variant=cls.spec.name if cls.spec.optional else None))

    def predict(self, batch: np.ndarray) -> Outputs:
        return {n: v * np.float32(self.scale) for n, v in self.inner.predict(batch).items()}


class OneByOne(Backend):
    """A backend's outputs window by window: bits that do not depend on how windows are batched (ONNX Runtime's
    CPU kernels may round a window differently in a batch of another size), for bit-for-bit tests of inputs."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    def predict(self, batch: np.ndarray) -> Outputs:
        outs = [self.inner.predict(batch[i : i + 1]) for i in range(len(batch))]
        return {
            n: np.concatenate([np.asarray(o[n]) for o in outs]) if outs else np.empty(0, np.float32)
            for n in OUTPUT_NAMES
        }


def dense_batch(
    run: runs.Run, raw: pl.DataFrame | None, day: dt.date, backend: str | Backend = "torch"
) -> pl.DataFrame:
    """What ``tthf-run --dense --backend BACKEND`` writes for ``day`` from ``raw`` (None: the run's own sources, e.g.
    its feature files), sorted by (ts, symbol): the batch side of every real-time-equals-batch test."""
    from tthf.engine.runtime.backends import open_backend
    from tthf.engine.runtime.day import Day, DayHost, DayPredictor
    from tthf.engine.store import open_store

    host = DayHost(run, open_store(run.config.data_root))
    features = host.features(Day(day, raw=raw) if raw is not None else host.read(day))
    backend_ = open_backend(run, backend) if isinstance(backend, str) else backend
    frame = DayPredictor(run, backend_, stride=1, batch_size=512).predict(features).frame
    if frame is None:
        raise AssertionError(f"no predictions for {day}")
    return frame.sort("ts", "symbol")

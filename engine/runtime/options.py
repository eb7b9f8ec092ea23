"""What ``tthf-run`` was asked to do: ``RunOptions`` and ``RayConfig``, each validated on construction.

Both are plain frozen values: they are recorded in the run manifest and cross to the
executors' workers as they are.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tthf.engine import predictions
from tthf.engine.config import DENSE_BATCH
from tthf.engine.runs import DEFAULT_PREDICTIONS, Run, check_predictions
from tthf.engine.runtime.backends import BACKENDS
from tthf.engine.runtime.runner import WINDOWING
from tthf.errors import UsageError

__all__ = ["EXECUTORS", "HOST_MODES", "RayConfig", "RunOptions"]

#: where the dates run: this process (overlapped stages) or the actors of a Ray cluster
EXECUTORS = ("local", "ray")
#: how --host-workers N > 1 runs its N dates at once: threads of this process (the default:
#: the kernel and polars release the GIL, nothing is copied) or worker processes
#: (tthf.engine.runtime.host_workers: no GIL at all, but each day's grid is pickled back)
HOST_MODES = ("threads", "processes")


@dataclass(frozen=True)
class RayConfig:
    """How ``--executor ray`` runs, validated on construction (the sizing itself needs the cluster).

    ``address`` None starts a local cluster sized to this machine; ``auto``, ``host:port``
    or ``ray://host:port`` joins one. ``workers`` None sizes the pool to the cluster.
    ``retries``: how many times a date whose worker died is given to another worker.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    retries: int = 2

    def __post_init__(self) -> None:
        if self.address is not None and not self.address.strip():
            raise UsageError(
                "--ray-address is empty; pass auto, host:port or ray://host:port, or omit it to start a local cluster"
            )
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker:g}")
        if self.retries < 0:
            raise UsageError(f"the retries of a date whose worker died must be >= 0, got {self.retries}")


@dataclass(frozen=True)
class RunOptions:
    """What ``tthf-run`` was asked to do, validated on construction; recorded in the run manifest."""

    dates: str
    dense: bool = False
    sample_every: int | None = None
    backend: str = "auto"
    batch_size: int = DENSE_BATCH
    fmt: str = "csv"
    overwrite: bool = False
    data_root: str | None = None
    fail_fast: bool = False
    overlap: bool = True  # False: the stages one after another (to measure the overlap)
    windowing: str = "auto"  # GPU only: where windows are cut (tthf.engine.runtime.runner.WINDOWING)
    executor: str = "local"  # one of EXECUTORS
    ray: RayConfig = RayConfig()  # --executor ray only
    host_workers: int = 1  # --executor local: dates whose read + features run at once
    host_mode: str = "threads"  # one of HOST_MODES: how host_workers > 1 runs
    as_of: dt.datetime | None = None  # latest|new: when sessions closed (None: now; naive: exchange time)
    max_missing: int = 0  # latest|new: completed sessions without data before the warning says stale
    predictions: str = DEFAULT_PREDICTIONS  # the prediction set: inference/ (default) or inference/NAME/

    def __post_init__(self) -> None:
        check_predictions(self.predictions)
        if self.executor not in EXECUTORS:
            raise UsageError(f"unknown --executor {self.executor!r}; use one of {', '.join(EXECUTORS)}")
        if self.executor != "ray" and self.ray != RayConfig():
            raise UsageError("--ray-address, --workers and --gpus-per-worker need --executor ray")
        if self.host_workers < 1:
            raise UsageError(f"--host-workers must be >= 1, got {self.host_workers}")
        if self.host_workers != 1 and self.executor != "local":
            raise UsageError("--host-workers is for --executor local; Ray's workers are sized by --workers")
        if self.host_mode not in HOST_MODES:
            raise UsageError(f"unknown --host-mode {self.host_mode!r}; use one of {', '.join(HOST_MODES)}")
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.fmt not in predictions.FORMATS:
            raise UsageError(f"unknown --format {self.fmt!r}; use one of {', '.join(predictions.FORMATS)}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.windowing not in WINDOWING:
            raise UsageError(f"unknown --windowing {self.windowing!r}; use one of {', '.join(WINDOWING)}")
        if self.max_missing < 0:
            raise UsageError(f"--max-missing must be >= 0, got {self.max_missing}")
        if self.sample_every is not None and self.sample_every < 1:
            raise UsageError(f"--sample-every must be >= 1, got {self.sample_every}")

    def host_workers_for(self, n_dates: int) -> int:
        """Dates whose read + features run at once: the option, never more than the dates."""
        return max(1, min(self.host_workers, n_dates))

    def stride(self, run: Run) -> int:
        """1 in dense mode, else the sparse sampling step (the option, or the run's ``sample_every``)."""
        if self.dense:
            return 1
        stride = self.sample_every if self.sample_every is not None else run.config.sample_every
        if stride < 1:
            raise UsageError(f"the run's sample_every must be >= 1, got {stride}; pass --sample-every")
        return stride

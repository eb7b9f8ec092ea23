"""``ExportConfig``: every setting of one export, saved in ``export/manifest.json``.

The TensorRT engine gets one optimization profile per entry of ``opt_batches``, all
sharing ``min_batch``..``max_batch``: the realistic batches are every symbol of one
minute (the real-time runner) and the dense runner's batch, and TensorRT tunes its
kernels for the ``opt`` shape of each profile. The engine picks the profile whose
``opt`` is nearest to the batch it is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tthf.engine.config import DENSE_BATCH, REALTIME_BATCH, from_dict
from tthf.errors import UsageError

EXPORTERS = ("dynamo", "torchscript")
#: what ``tthf-run --backend auto`` may serve on a CPU host: fp32, or a reduced precision opted into
AUTO_PRECISIONS = ("fp32", "bf16", "int8")


@dataclass(frozen=True)
class ExportConfig:
    """How to export, build and validate; ``tthf-export --help`` documents each flag."""

    exporter: str = "dynamo"
    opset: int = 18
    min_batch: int = 1
    opt_batches: tuple[int, ...] = (REALTIME_BATCH, DENSE_BATCH)
    max_batch: int = 8192
    workspace_mib: int = 2048
    # The real-time and the dense runner's batch (defaults only: pass the real ones with --opt-batch).
    # Validation: random N(0, 1) batches (features are scaled to unit scale) at these
    # sizes, plus up to ``real_windows`` windows from the held-out (test) dates.
    random_batches: tuple[int, ...] = (1, 37, REALTIME_BATCH)
    real_windows: int = 2048
    seed: int = 0
    require_engine: bool = False
    # The int8 variant (``tthf-export --int8``): quantized on up to ``calibration_windows`` windows
    # of the run's training dates.
    int8: bool = False
    calibration_windows: int = 512
    # Forecast quality of every optional variant: scored against fp32 on up to this many windows
    # of the held-out dates (0: not judged).
    quality_windows: int = 20000
    # What ``tthf-run --backend auto`` serves on a CPU host (``tthf-export --auto-precision``): fp32, or an
    # optional variant's precision, opted into here and recorded in the manifest's ``auto_precision``.
    auto_precision: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "opt_batches", tuple(int(b) for b in self.opt_batches))
        object.__setattr__(self, "random_batches", tuple(int(b) for b in self.random_batches))
        if self.exporter not in EXPORTERS:
            raise UsageError(f"unknown exporter {self.exporter!r}; choose one of {', '.join(EXPORTERS)}")
        if self.opset < 17:
            raise UsageError(f"opset {self.opset} is too old: LayerNormalization needs opset 17 or newer")
        if self.exporter == "dynamo" and self.opset < 18:
            raise UsageError("the dynamo exporter writes opset 18 or newer; pass --opset 18")
        if not self.opt_batches:
            raise UsageError("give at least one --opt-batch")
        if not 1 <= self.min_batch <= min(self.opt_batches) <= max(self.opt_batches) <= self.max_batch:
            raise UsageError(
                f"batch sizes must satisfy 1 <= min ({self.min_batch}) <= every opt {list(self.opt_batches)} "
                f"<= max ({self.max_batch}); fix --min-batch/--opt-batch/--max-batch"
            )
        if self.calibration_windows < 1 or self.quality_windows < 0:
            raise UsageError("--calibration-windows must be >= 1 and --quality-windows >= 0")
        if any(b < 1 for b in self.random_batches) or self.real_windows < 0:
            raise UsageError("validation batch sizes must be >= 1 and --real-windows >= 0")
        if self.workspace_mib < 1:
            raise UsageError("--workspace-mib must be >= 1")
        if self.auto_precision not in AUTO_PRECISIONS:
            raise UsageError(
                f"unknown --auto-precision {self.auto_precision!r}; use one of {', '.join(AUTO_PRECISIONS)}"
            )
        if self.auto_precision == "int8" and not self.int8:
            raise UsageError("--auto-precision int8 needs --int8 (the int8 variant is built only when asked)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "export/manifest.json") -> ExportConfig:
        return from_dict(cls, raw, source)

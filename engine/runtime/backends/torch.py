"""The PyTorch reference as a backend: the checkpoint's network, fp32 on the CPU.

``torch`` is the reference and stays fp32 on the CPU whatever the host has (tests and
validation compare against it). On the CPU it pads every call to a multiple of ``ROW_MULTIPLE``
rows: torch's vectorized elementwise kernels (erf, exp) finish a tensor whose length is not a
multiple of their unrolled vector width (32 floats with AVX-512) with a scalar loop that can
differ by an ulp, so without the padding a window's outputs would depend on the size of the
batch it came in (real time's few rows against batch's thousands; seen on AVX-512 CPUs). ``torch-cuda`` is the same network on the GPU under fp16
autocast: a different precision, so a different backend name (and settings key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tthf.engine.config import DENSE_BATCH, OUTPUT_NAMES
from tthf.engine.model.interface import Outputs, predict_in_chunks
from tthf.engine.runs import Run
from tthf.engine.runtime.backends.base import Backend, BackendSpec, DeviceEngine, Needs
from tthf.errors import BackendUnavailableError

if TYPE_CHECKING:
    from tthf.engine.model.network import ThreeHeadedTransformer


#: CPU calls are padded to this many rows, a multiple of every vector width torch unrolls to
ROW_MULTIPLE = 64


class TorchBackend(Backend):
    def __init__(
        self, model: ThreeHeadedTransformer, *, device: str = "cpu", batch_size: int = 2 * DENSE_BATCH
    ) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch-cuda needs a CUDA device visible to PyTorch (a CUDA build of torch)")
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.detail = f"{self.device}, {'fp16 autocast' if self.device.type == 'cuda' else 'fp32'}"

    @classmethod
    def from_run(cls, run: Run, **options: Any) -> TorchBackend:
        """The run's checkpoint; the reference needs no export."""
        return cls(run.load_model(), **options)

    def predict(self, batch: np.ndarray) -> Outputs:
        return predict_in_chunks(self._predict_chunk, batch, self.batch_size)

    def _predict_chunk(self, batch: np.ndarray) -> Outputs:
        torch = self._torch
        # fp16 autocast on CUDA; fp32 on CPU (the reference).
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda")
        n = len(batch)
        if self.device.type == "cpu" and n % ROW_MULTIPLE:
            pad = np.zeros((ROW_MULTIPLE - n % ROW_MULTIPLE, *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, pad])
        with torch.inference_mode(), autocast:
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return {name: t[:n].float().cpu().numpy() for name, t in zip(OUTPUT_NAMES, self.model(x))}

    def device_engine(self) -> DeviceEngine | None:
        if self.device.type != "cuda":
            return None
        torch, model = self._torch, self.model

        def execute(x: Any, outs: dict[str, Any], n: int, stream: Any) -> None:
            with torch.cuda.stream(stream), torch.inference_mode():
                with torch.autocast("cuda", dtype=torch.float16):
                    result = model(x[:n])
                for name, value in zip(OUTPUT_NAMES, result):
                    outs[name][:n].copy_(value)

        return DeviceEngine(execute, dict.fromkeys(OUTPUT_NAMES, torch.float32))

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "torch": self._torch.__version__}


class TorchCudaBackend(TorchBackend):
    """The reference network on the first CUDA device under fp16 autocast."""

    @classmethod
    def from_run(cls, run: Run, **options: Any) -> TorchCudaBackend:
        return cls(run.load_model(), device="cuda", **options)


# Both need no export: ``auto``'s fallback, the one of the host's device (``auto_rank`` None).
TORCH = TorchBackend.spec = BackendSpec("torch", TorchBackend, precision="fp32", device="cpu", needs=Needs(("torch",)))
TORCH_CUDA = TorchCudaBackend.spec = BackendSpec(
    "torch-cuda", TorchCudaBackend, precision="fp16", device="cuda", needs=Needs(("torch",))
)

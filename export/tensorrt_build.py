"""Build the fp16 TensorRT engine with NVIDIA's Python API (loading and running it is the tensorrt backend).

The network is strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``):
precision comes from the tensor types of ``model_fp16.onnx`` (export/fp16.py), never
from a builder flag. TensorRT 11 requires this (its FP16 flag is gone); TensorRT 10
accepts the same flag, so one code path serves both. One optimization profile per
``opt`` batch; the timing cache saved next to the engine makes the next build faster.
``tensorrt`` is imported inside the function: this module imports without it.
"""

from __future__ import annotations

import logging

from tthf.engine.model.interface import INPUT_NAME
from tthf.engine.runtime.backends.tensorrt import trt_logger
from tthf.errors import ExportError

log = logging.getLogger("tthf.export")


def build_engine(
    onnx_bytes: bytes,
    *,
    seq_len: int,
    n_features: int,
    min_batch: int,
    opt_batches: tuple[int, ...],
    max_batch: int,
    workspace_mib: int,
    timing_cache: bytes | None,
) -> tuple[bytes, bytes, bool]:
    """Parse the fp16 ONNX, build a strongly typed engine.

    Returns (engine, updated timing cache, whether the given cache was used: TensorRT rejects
    a cache made on another device).
    """
    import tensorrt as trt

    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(
            f"TensorRT's ONNX parser rejected model_fp16.onnx: {errors}; check the TensorRT version "
            "(10 or newer is supported)"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    cache = config.create_timing_cache(timing_cache or b"")
    cache_used = bool(config.set_timing_cache(cache, False)) and timing_cache is not None
    if timing_cache is not None and not cache_used:
        log.warning("the saved timing cache does not match this GPU/TensorRT; building without it")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    for opt in opt_batches:
        profile = builder.create_optimization_profile()
        profile.set_shape(
            INPUT_NAME, (min_batch, seq_len, n_features), (opt, seq_len, n_features), (max_batch, seq_len, n_features)
        )
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            "TensorRT failed to build the engine (its log above says why); try a larger --workspace-mib "
            "or a smaller --max-batch"
        )
    timing = config.get_timing_cache()
    return bytes(serialized), bytes(timing.serialize()), cache_used

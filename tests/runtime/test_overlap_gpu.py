"""The ring's measured overlap of H2D, compute and D2H (issue 10, item 4).

On the CPU: ``bench/intervals.py``'s ``overlap`` on made-up intervals whose answer is known (serial work
overlaps 0, a perfect three-stage pipeline hides every copy), and bench/gpu_report.py's
section for bench/gpu_overlap.py's records. On a CUDA host (``gpu``): the CUDA events of a
real ring run come in the order the streams impose (each batch's upload before its compute,
its compute before its download) and timing does not change a single output bit.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.runtime.runner import CudaRunner

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _helper(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec and spec.loader
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


overlap = _helper("intervals").overlap  # bench/intervals.py: the runtime does not need it


def test_serial_stages_do_not_overlap() -> None:
    got = overlap({"upload": [(0, 1), (3, 4)], "compute": [(1, 2), (4, 5)], "download": [(2, 3), (5, 6)]})
    assert got["serial_ms"] == got["busy_ms"] == 6
    assert got["overlap"] == 0 and got["copy_hidden"] == 0
    assert got["upload_ms"] == 2 and got["compute_ms"] == 2 and got["download_ms"] == 2


def test_a_pipelined_ring_hides_its_copies_behind_compute() -> None:
    # batch i uploads during batch i-1's compute and downloads during batch i+1's: 4 batches of 1 ms each stage
    upload = [(i, i + 1) for i in range(4)]
    compute = [(i + 1, i + 2) for i in range(4)]
    download = [(i + 2, i + 3) for i in range(4)]
    got = overlap({"upload": upload, "compute": compute, "download": download})
    assert got["serial_ms"] == 12 and got["busy_ms"] == 6
    assert got["overlap"] == pytest.approx(0.5)
    # compute runs from 1 to 5; copies cover 0..6 (6 ms of copy time, 4 of them under compute)
    assert got["copy_hidden"] == pytest.approx(4 / 6)


def test_copies_exactly_under_compute_are_all_hidden_and_empty_is_zero() -> None:
    got = overlap({"upload": [(1, 2)], "compute": [(0, 4)], "download": [(2, 3)]})
    assert got["copy_hidden"] == 1 and got["busy_ms"] == 4 and got["overlap"] == pytest.approx(1 - 4 / 6)
    assert overlap({})["overlap"] == 0 and overlap({})["copy_hidden"] == 0


def test_the_report_shows_the_overlap_records(tmp_path: Path) -> None:
    report = _helper("gpu_report")
    record = {
        "backend": "tensorrt",
        "windowing": "host",
        "windows": 390000,
        "batches": 96,
        "batch_size": 4096,
        "slots": 3,
        "wall_s": 1.25,
        **overlap({"upload": [(0, 2)], "compute": [(1, 3)], "download": [(3, 4)]}),
    }
    lines = report.overlap_section([record])
    row = next(line for line in lines if line.startswith("| tensorrt"))
    # serial 2 + 2 + 1 = 5 ms, busy 0..4 = 4 ms: 20%; copies 3 ms, 1 of them under compute: 33%
    assert "| host | 390,000 | 96 x 4096 |" in row and "| 20% | 33% |" in row
    assert "overlap.json missing" in "\n".join(report.overlap_section(None))
    (tmp_path / "overlap.json").write_text(json.dumps([record]))
    text, _ = report.render(tmp_path)
    assert "## Ring overlap" in text and "| tensorrt | host |" in text


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available on this host (torch.cuda.is_available() is False)"
)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("windowing", ["host", "device"])
def test_the_rings_events_follow_the_stream_order_and_timing_changes_no_bit(tmp_path: Path, windowing: str) -> None:
    from tthf.engine.data.marketdata import read_day
    from tthf.engine.features import build_day
    from tthf.engine.runtime.backends import open_backend
    from tthf.engine.testing import DAYS, make_data, make_run

    data = make_data(tmp_path / "data", n_symbols=8)
    run = make_run(str(tmp_path / "runs"), data)
    feats = build_day(read_day(str(data), DAYS[1]), DAYS[1])
    scaled = run.load_scalers().transform_day(feats, run.config.feature_names)
    engine = open_backend(run, "torch-cuda").device_engine()
    kw = dict(capacity=64, seq_len=run.config.model.seq_len, n_features=scaled.shape[2], windowing=windowing)
    timed, plain = CudaRunner(engine, timing=True, **kw), CudaRunner(engine, **kw)
    got, want = timed.run(scaled, feats.mask, stride=1), plain.run(scaled, feats.mask, stride=1)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(got.outputs[name], want.outputs[name])
    times = timed.stage_times()
    batches = -(-len(got.sym) // 64)
    assert len(times["compute"]) == len(times["download"]) == batches > 2
    eps = 1e-3  # ms: CUDA event resolution is about half a microsecond
    if windowing == "host":
        assert len(times["upload"]) == batches
        for up, comp in zip(times["upload"], times["compute"], strict=True):
            assert up[1] <= comp[0] + eps  # the compute stream waited for this batch's upload
    else:
        assert len(times["upload"]) == 1 and len(times["gather"]) == batches  # the grid once, a gather per batch
        assert times["upload"][0][1] <= times["gather"][0][0] + eps
    for comp, down in zip(times["compute"], times["download"], strict=True):
        assert comp[1] <= down[0] + eps and down[0] <= down[1]
    summary = overlap(times)
    assert 0 <= summary["overlap"] < 1 and summary["busy_ms"] > 0
    assert plain.stage_times() == {}

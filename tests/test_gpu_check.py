"""bench/gpu_check.sh and its helpers, on a CPU host.

The script itself needs a GPU, so here it must say "no GPU" and exit 77 without writing
anything. Its comparison (bench/gpu_compare.py) is tested on real ``tthf-run`` predictions
of a tiny run: identical files pass, and each output scaled by 1.05 fails, as do a missing
row, a moved source_ts and a NaN. The overlap step (bench/gpu_overlap.py) runs a day of the
same run through a stand-in for the CUDA ring: everything but the GPU. The report
(bench/gpu_report.py) is rendered from a work folder holding what the steps write.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl
import pytest

from tthf.cli.run import main as tthf_run
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.model.interface import tolerances
from tthf.engine.runs import Run, find_run
from tthf.engine.runtime.backends import Backend, open_backend
from tthf.engine.runtime.day import DayHost
from tthf.engine.runtime.doctor import diagnose
from tthf.engine.runtime.runner import HostRunner, Intervals
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS, make_data, make_run

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_helper(name: str) -> ModuleType:
    """A helper script beside the benchmarks, imported as a module of its own name."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec and spec.loader
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load_helper("intervals")  # gpu_overlap imports it by its name, as bench/ on sys.path lets it do
gpu_compare, gpu_fixture, gpu_overlap, gpu_report = (
    load_helper(n) for n in ("gpu_compare", "gpu_fixture", "gpu_overlap", "gpu_report")
)
NO_GPU = 77
RESULTS = BENCH / "GPU_RESULTS.md"


def _state(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def _run_check(path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "TTHF_GPU_CHECK_DIR": "/nonexistent/never-created"}
    return subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_gpu_check_says_no_gpu_and_exits_77_when_nvidia_smi_lists_none(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"  # what nvidia-smi prints in a container without a device
    fake.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    before = _state(RESULTS)
    proc = _run_check(f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert proc.returncode == NO_GPU, proc.stderr
    assert "gpu_check: no GPU: nvidia-smi lists no GPU on this machine; nothing was run" in proc.stderr
    assert _state(RESULTS) == before and not Path("/nonexistent/never-created").exists()


def test_gpu_check_says_no_gpu_and_exits_77_without_nvidia_smi(tmp_path: Path) -> None:
    bare = "/usr/bin:/bin"
    if shutil.which("nvidia-smi", path=bare):
        pytest.skip("nvidia-smi is installed in /usr/bin or /bin here")
    before = _state(RESULTS)
    proc = _run_check(bare)
    assert proc.returncode == NO_GPU, proc.stderr
    assert "gpu_check: no GPU: nvidia-smi is not on PATH" in proc.stderr
    assert _state(RESULTS) == before


@pytest.fixture(scope="module")
def predictions(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, pl.DataFrame]:
    """Real dense predictions of one date of the tiny run (torch backend), and the run's store."""
    base = tmp_path_factory.mktemp("gpucheck")
    store = str(base / "store")
    run = make_run(store, make_data(base / "data"))
    assert (
        tthf_run(
            ["--run", "jennifer", "--store", store, "--dates", DAYS[2].isoformat(), "--dense", "--backend", "torch"]
        )
        == 0
    )
    path = Path(run.ref.uri) / "inference" / f"{DAYS[2].isoformat()}.csv"
    return store, path, gpu_compare.read_predictions(path)


def _compare(store: str, ref: pl.DataFrame, got: pl.DataFrame) -> gpu_compare.FileComparison:
    from tthf.engine.runs import Run, find_run

    model = Run.open(find_run(store, "jennifer")).config.model
    return gpu_compare.compare_predictions(ref, got, tolerances("fp16", model), precision="fp16")


def test_identical_predictions_pass(predictions: tuple[str, Path, pl.DataFrame]) -> None:
    store, _, ref = predictions
    result = _compare(store, ref, ref.clone())
    assert result.passed and result.rows == ref.height > 100 and result.problems == []
    assert [c.output for c in result.outputs] == list(OUTPUT_NAMES)
    assert all(c.max_abs == 0 for c in result.outputs)


@pytest.mark.parametrize("output", OUTPUT_NAMES)
def test_an_output_scaled_by_1_05_fails(predictions: tuple[str, Path, pl.DataFrame], output: str) -> None:
    store, _, ref = predictions
    result = _compare(store, ref, ref.with_columns(pl.col(output) * 1.05))
    failed = [c.output for c in result.outputs if not c.passed]
    assert failed == [output] and not result.passed


def test_row_and_value_problems_fail(predictions: tuple[str, Path, pl.DataFrame]) -> None:
    store, _, ref = predictions
    missing = _compare(store, ref, ref.slice(1))
    assert missing.problems == ["1 rows only in the reference, 0 rows only in the compared file"]
    moved = _compare(store, ref, ref.with_columns(pl.col("source_ts").shift(1, fill_value=ref["source_ts"][0])))
    assert any(p.endswith("rows have another source_ts") for p in moved.problems) and not moved.passed
    nan = ref.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(np.nan).otherwise(pl.col("vol_10m")).cast(pl.Float32).alias("vol_10m")
    )
    broken = _compare(store, ref, nan)
    assert not broken.passed and "non-finite" in broken.problems[0]


def test_the_compare_command(
    predictions: tuple[str, Path, pl.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, path, ref = predictions
    scaled = tmp_path / "scaled.csv"
    scaled.write_bytes(
        ref.with_columns(pl.col("ret_conf") * 1.05).write_csv(datetime_format="%Y-%m-%dT%H:%M:%SZ").encode()
    )
    out = tmp_path / "compare.json"
    assert gpu_compare.main([str(path), str(path), "--store", store, "--run", "jennifer", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["passed"] is True
    assert gpu_compare.main([str(path), str(scaled), "--store", store, "--run", "jennifer", "--json", str(out)]) == 1
    result = json.loads(out.read_text())
    assert [o["output"] for o in result["outputs"] if not o["passed"]] == ["ret_conf"]
    assert gpu_compare.main([str(path), str(tmp_path / "absent.csv"), "--store", store, "--run", "jennifer"]) == 1
    assert "absent.csv does not exist" in capsys.readouterr().out


def test_the_fixture_makes_a_run_and_names_its_last_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data(tmp_path / "data")
    assert gpu_fixture.main(["--store", str(tmp_path / "store"), "--data", str(data)]) == 0
    assert capsys.readouterr().out.strip() == DAYS[-1].isoformat()
    assert (tmp_path / "store" / "demo" / "three_headed_transformer" / "gpucheck" / "config.json").exists()
    (tmp_path / "short").mkdir()
    assert gpu_fixture.main(["--store", str(tmp_path / "s2"), "--data", str(tmp_path / "short")]) == 2


class HostRing(HostRunner):
    """``CudaRunner``'s interface on the CPU: the host runner's windows, two fixed timed spans."""

    def __init__(
        self,
        engine: Backend,
        *,
        capacity: int,
        seq_len: int,
        n_features: int,
        windowing: str = "auto",
        timing: bool = False,
    ) -> None:
        super().__init__(engine, capacity=capacity, seq_len=seq_len, n_features=n_features)
        self.capacity, self.slots, self.windowing, self.timing = capacity, [0, 1], windowing, timing
        self.n_features = n_features

    def stage_times(self) -> Intervals:
        return {"h2d": [(0.0, 1.0)], "compute": [(0.5, 2.0)]}


def test_the_overlap_step_runs_a_day_through_the_ring(
    predictions: tuple[str, Path, pl.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gpu_overlap.py from a day's features to the ring's records, the CUDA ring replaced by ``HostRing``."""
    store, _, ref = predictions
    rings: list[HostRing] = []

    def on_the_host(run: Run, name: str) -> Backend:
        backend = open_backend(run, name)
        monkeypatch.setattr(backend, "device_engine", lambda: backend)
        return backend

    def ring(engine: Any, **kwargs: Any) -> HostRing:
        rings.append(HostRing(engine, **kwargs))
        return rings[-1]

    monkeypatch.setattr(gpu_overlap, "open_backend", on_the_host)
    monkeypatch.setattr(gpu_overlap, "CudaRunner", ring)
    run = Run.open(find_run(store, "jennifer"))
    host = DayHost(run, open_store(str(make_data(tmp_path / "data"))))
    feats = host.features(host.read(DAYS[2])).features
    assert feats is not None
    records = gpu_overlap.measure(run, feats, "torch", 4096)
    assert [r["windowing"] for r in records] == ["host", "device"]
    n_features = len(run.config.feature_names)
    assert [(r.windowing, r.timing, r.n_features) for r in rings] == [
        ("host", True, n_features),
        ("device", True, n_features),
    ]
    assert all(r["windows"] == ref.height and r["slots"] == 2 and r["batch_size"] == 4096 for r in records)
    assert all(r["overlap"] == pytest.approx(1 - 2.0 / 2.5) for r in records)


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.runtime.test_runner_gpu" name="test_ring[host]" time="1.0"/>
<testcase classname="tests.export.test_gpu_engine" name="test_engine" time="2.0">{extra}</testcase>
<testcase classname="tests.runtime.test_runner_gpu" name="test_stress" time="1.0"/>
</testsuite></testsuites>"""


def _workdir(tmp_path: Path, predictions: tuple[str, Path, pl.DataFrame], *, skipped: bool, seconds: float) -> Path:
    store, path, _ = predictions
    work = tmp_path / "work"
    work.mkdir()
    (work / "steps.tsv").write_text(
        f"doctor\t0\t{seconds / 2}\ttthf-doctor --json\ncompare\t0\t{seconds / 2}\tpython bench/gpu_compare.py\n"
    )
    extra = '<skipped type="pytest.skip" message="needs CUDA + TensorRT"/>' if skipped else ""
    (work / "gpu-tests.xml").write_text(JUNIT.format(extra=extra))
    (work / "doctor.json").write_text(diagnose(backend="torch").to_json())
    gpu_compare.main(
        [str(path), str(path), "--store", store, "--run", "jennifer", "--json", str(work / "compare.json")]
    )
    return work


def test_the_report_passes_and_shows_the_machine_steps_and_comparison(
    tmp_path: Path, predictions: tuple[str, Path, pl.DataFrame]
) -> None:
    text, reasons = gpu_report.render(_workdir(tmp_path, predictions, skipped=False, seconds=10.0))
    assert reasons == [] and "**Verdict: PASS**" in text
    assert "- cpu: " in text and "- verdict: OK: backend torch" in text
    assert "| doctor | ok | 5.0 | `tthf-doctor --json` |" in text and "Total 10.0 s (budget 300 s)." in text
    assert "3 collected: 3 passed, 0 failed, 0 skipped." in text
    assert "| ret_1h | 0.00e+00 |" in text and "No benchmark results (gpu-bench.json missing)." in text


def test_the_report_fails_on_a_skipped_gpu_test_and_on_the_budget(
    tmp_path: Path, predictions: tuple[str, Path, pl.DataFrame]
) -> None:
    text, reasons = gpu_report.render(_workdir(tmp_path, predictions, skipped=True, seconds=400.0))
    assert reasons == ["1 gpu test(s) skipped on a GPU host", "took 400 s, over the 300 s budget"]
    assert "**Verdict: FAIL**" in text
    assert "- SKIPPED tests.export.test_gpu_engine::test_engine: needs CUDA + TensorRT" in text
    assert gpu_report.main([str(tmp_path / "work"), str(tmp_path / "out.md")]) == 1
    assert (tmp_path / "out.md").read_text().startswith("# tthf GPU acceptance results")


def test_a_failed_step_is_reported_with_its_log(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "steps.tsv").write_text("export\t5\t12.5\ttthf-export --run gpucheck --require-engine\n")
    (work / "export.log").write_text("line\n" * 50 + "tthf-export: error: validation failed\n")
    text, reasons = gpu_report.render(work)
    assert reasons == ["step export exited 5", "no GPU test results (gpu-tests.xml missing)"]
    assert "| export | **exit 5** | 12.5 |" in text
    assert "### export (exit 5), last 40 lines" in text and "tthf-export: error: validation failed" in text

"""``tthf-run --executor ray`` on one local Ray cluster shared by this module's tests.

The same files byte for byte as ``--executor local`` (dense CSV, sparse Parquet), resume
across executors, a bad date, workers killed mid-date, input and output on the loopback S3
server, joining a running cluster by address, and the errors that say how to fix a setup.
The cluster has 2 CPUs whatever the machine; workers ask for fractional CPUs (ray-project/ray#44687).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pytest
from hypothesis import given

from tthf.cli.run import main
from tthf.engine import runs
from tthf.engine.data.marketdata import read_day, write_day
from tthf.engine.runtime.options import RayConfig, RunOptions
from tthf.engine.runtime.plan import plan_inference
from tthf.engine.runtime.ray_executor import RESERVED_CPUS, execute_ray, size_workers
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS, StallingData, free_port, make_data, make_run
from tthf.errors import ExecutorError, UsageError

ray = pytest.importorskip("ray", reason="pip install 'tthf[ray]' to test --executor ray")

pytestmark = pytest.mark.timeout(180)

RUN_DIR = Path("demo/three_headed_transformer/jennifer")
INFERENCE = RUN_DIR / "inference"
SPEC = f"{DAYS[0]}:{DAYS[-1]}"


@pytest.fixture(scope="module")
def cluster(ray_cluster: str) -> str:
    """The session's 2-CPU local Ray cluster (tests/conftest.py); returns its address."""
    return ray_cluster


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tiny")
    make_run(str(base / "runs"), make_data(base / "data", n_symbols=4))
    return base


def _copy(tiny: Path, dest: Path) -> Path:
    """A copy of the tiny run and market whose config points at the copied market."""
    shutil.copytree(tiny, dest, dirs_exist_ok=True)
    cfg_path = dest / "runs" / RUN_DIR / runs.CONFIG
    cfg = json.loads(cfg_path.read_text())
    cfg["data_root"] = str(dest / "data")
    cfg_path.write_text(json.dumps(cfg))
    return dest


@pytest.fixture
def work(tiny: Path, tmp_path: Path) -> Path:
    return _copy(tiny, tmp_path)


def _run(work: Path, *args: str) -> int:
    return main(["--run", "jen", "--store", str(work / "runs"), *args])


def _files(work: Path, ext: str = "csv") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "runs" / INFERENCE).glob(f"*.{ext}"))}


def _manifest(work: Path) -> dict:
    return json.loads((work / "runs" / INFERENCE / "manifest.json").read_text())


@pytest.fixture(scope="module")
def local_dense(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The dense CSV files of ``--executor local``: what every Ray run here must reproduce byte for byte."""
    work = _copy(tiny, tmp_path_factory.mktemp("local"))
    assert _run(work, "--dates", SPEC, "--dense") == 0
    files = _files(work)
    assert sorted(files) == [f"{d}.csv" for d in DAYS]
    return files


class Killer:
    """Kills (SIGKILL) every worker that ``StallingData`` parks, from a thread; ``killed`` lists (date, pid)."""

    def __init__(self, pid_dir: Path) -> None:
        self.pid_dir = pid_dir
        self.killed: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for entry in sorted(self.pid_dir.iterdir()):
                day, pid = entry.name.rsplit("-", 1)
                if (day, int(pid)) not in self.killed:
                    os.kill(int(pid), signal.SIGKILL)
                    self.killed.append((day, int(pid)))

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _plan(work: Path, **ray_options: object):
    options = RunOptions(dates=SPEC, dense=True, executor="ray", ray=RayConfig(**ray_options))  # type: ignore[arg-type]
    return plan_inference(runs.open_run(str(work / "runs"), "jennifer"), options)


# --- sizing: pure, no cluster ------------------------------------------------------------


def test_the_default_pool_on_two_cpus_is_one_worker_of_two_threads_that_leaves_ray_a_cpu_share() -> None:
    sizing = size_workers(RayConfig(), cpus=2, gpus=0)
    assert (sizing.workers, sizing.num_cpus, sizing.num_gpus, sizing.threads, sizing.note) == (1, 1.5, 0.0, 2, "")
    assert size_workers(RayConfig(), cpus=64, gpus=0).workers == 32
    two = size_workers(RayConfig(workers=2), cpus=2, gpus=0)
    assert (two.workers, two.num_cpus, two.threads) == (2, 0.75, 1)


def test_more_workers_than_cpus_are_sized_down_with_a_message_that_names_the_hang() -> None:
    sizing = size_workers(RayConfig(workers=4), cpus=2, gpus=0)
    assert (sizing.workers, sizing.num_cpus) == (2, 0.75)
    assert "--workers 4 does not fit" in sizing.note and "ray-project/ray#44687" in sizing.note


def test_cpu_workers_split_the_cores_and_gpu_workers_take_one_gpu_each() -> None:
    cpu = size_workers(RayConfig(workers=4), cpus=64, gpus=0)
    assert (cpu.workers, cpu.num_cpus, cpu.threads) == (4, 15.875, 16)
    gpu = size_workers(RayConfig(gpus_per_worker=1), cpus=32, gpus=4)
    assert (gpu.workers, gpu.num_cpus, gpu.num_gpus, gpu.threads) == (4, 1.0, 1, None)
    half = size_workers(RayConfig(workers=5, gpus_per_worker=0.5), cpus=2, gpus=2)
    assert (half.workers, half.num_cpus, half.num_gpus) == (4, 0.375, 0.5)
    assert "the others would wait forever" in half.note


def test_a_cluster_without_room_is_refused_with_the_fix() -> None:
    with pytest.raises(ExecutorError, match="0 free GPUs; add GPU nodes, or use --gpus-per-worker 0"):
        size_workers(RayConfig(gpus_per_worker=1), cpus=8, gpus=0)
    with pytest.raises(ExecutorError, match="0.5 free CPUs"):
        size_workers(RayConfig(), cpus=0.5, gpus=0)


@given(
    cpus=st.floats(0.51, 512),
    gpus=st.integers(0, 16),
    workers=st.none() | st.integers(1, 600),
    per_gpu=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]),
)
def test_the_workers_never_ask_for_every_cpu_or_more_gpus_than_free(
    cpus: float, gpus: int, workers: int | None, per_gpu: float
) -> None:
    try:
        sizing = size_workers(RayConfig(workers=workers, gpus_per_worker=per_gpu), cpus=cpus, gpus=gpus)
    except ExecutorError:
        assert per_gpu > gpus
        return
    assert 1 <= sizing.workers <= (workers or sizing.workers)
    assert sizing.num_cpus > 0 and sizing.workers * sizing.num_cpus <= cpus - RESERVED_CPUS + 1e-9
    assert sizing.workers * sizing.num_gpus <= gpus
    assert bool(sizing.note) == (workers is not None and workers > sizing.workers)


def test_ray_options_are_checked_before_any_work(work: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run(work, "--dates", SPEC, "--workers", "2") == 2
    assert "need --executor ray" in capsys.readouterr().err
    assert _run(work, "--dates", SPEC, "--executor", "ray", "--workers", "0") == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    with pytest.raises(UsageError, match="unknown --executor 'dask'"):
        RunOptions(dates=SPEC, executor="dask")


def test_without_ray_installed_the_error_is_one_line_that_says_how_to_install(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    assert _run(work, "--dates", SPEC, "--dense", "--executor", "ray") == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tthf-run: error: --executor ray needs Ray, which is not installed here")
    assert "pip install 'tthf[ray]'" in err[-1]
    assert not _files(work)


# --- on the cluster ------------------------------------------------------------------------


@pytest.mark.slow
def test_dense_files_are_byte_identical_to_local_and_resume_works_across_executors(
    cluster: str, work: Path, local_dense: dict[str, bytes], capsys: pytest.CaptureFixture
) -> None:
    assert _run(work, "--dates", f"{DAYS[0]}:{DAYS[1]}", "--dense") == 0
    capsys.readouterr()
    assert _run(work, "--dates", SPEC, "--dense", "--executor", "ray") == 0
    assert "dates: 1 ok, 0 failed, 2 skipped" in capsys.readouterr().out
    assert _files(work) == local_dense
    dates = _manifest(work)["dates"]
    assert [dates[d.isoformat()]["executor"] for d in DAYS] == ["local", "local", "ray"]
    assert _run(work, "--dates", SPEC, "--dense") == 0  # and the other way round
    assert "dates: 0 ok, 0 failed, 3 skipped" in capsys.readouterr().out

    assert _run(work, "--dates", SPEC, "--dense", "--executor", "ray", "--overwrite", "--workers", "2") == 0
    assert "dates: 3 ok, 0 failed, 0 skipped" in capsys.readouterr().out
    assert _files(work) == local_dense
    manifest = _manifest(work)
    ok = [manifest["dates"][d.isoformat()] for d in DAYS]
    assert {e["status"] for e in ok} == {"ok"} and {e["executor"] for e in ok} == {"ray"}
    workers = {e["worker"] for e in ok}
    assert len(workers) == 2 and all(int(w.rsplit(":", 1)[1]) != os.getpid() for w in workers)
    assert manifest["settings"]["executor"] == "ray"
    assert manifest["settings"]["ray"] == {
        "address": "local",
        "workers": 2,
        "cpus_per_worker": 0.75,
        "gpus_per_worker": 0.0,
        "threads": 1,
        "retries": 2,
    }
    assert _run(work, "--dates", SPEC, "--dense", "--executor", "ray") == 0  # all done: no worker starts
    assert "dates: 0 ok, 0 failed, 3 skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_sparse_parquet_files_are_byte_identical_to_the_local_executor(
    cluster: str, tiny: Path, work: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    local = _copy(tiny, tmp_path_factory.mktemp("sparse-local"))
    sparse = ["--dates", SPEC, "--sample-every", "7", "--format", "parquet"]
    assert _run(local, *sparse) == 0
    assert _run(work, *sparse, "--executor", "ray") == 0
    expected = _files(local, "parquet")
    assert sorted(expected) == [f"{d}.parquet" for d in DAYS]
    assert _files(work, "parquet") == expected
    frame = pl.read_parquet(work / "runs" / INFERENCE / f"{DAYS[1]}.parquet")
    assert (frame["ts"] != frame["source_ts"]).sum() > frame.height // 2  # forward-filled rows: really sparse


@pytest.mark.slow
def test_a_bad_date_is_recorded_with_its_reason_the_others_go_on_and_fail_fast_stops(
    cluster: str,
    work: Path,
    local_dense: dict[str, bytes],
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    part = work / "data" / f"date={DAYS[1]}" / "part-0.parquet"
    pl.read_parquet(part).drop("ask").write_parquet(part)
    with caplog.at_level(logging.WARNING, logger="tthf.run"):
        assert _run(work, "--dates", SPEC, "--dense", "--executor", "ray", "--workers", "5") == 1
    assert "--workers 5 does not fit" in caplog.text and "using 2 workers" in caplog.text
    out = capsys.readouterr().out
    assert "dates: 2 ok, 1 failed" in out and f"FAILED {DAYS[1]}" in out and "ask" in out and "part-0.parquet" in out
    failed = _manifest(work)["dates"][DAYS[1].isoformat()]
    assert failed["status"] == "failed" and failed["executor"] == "ray" and "part-0.parquet" in failed["reason"]
    files = _files(work)
    assert files == {k: v for k, v in local_dense.items() if k != f"{DAYS[1]}.csv"}
    last = _manifest(work)["dates"][DAYS[2].isoformat()]
    # one worker computes the dates in order: the failure stops the run before the third date is given out
    assert (
        _run(work, "--dates", SPEC, "--dense", "--executor", "ray", "--workers", "1", "--overwrite", "--fail-fast") == 1
    )
    assert "dates: 1 ok, 1 failed, 0 skipped" in capsys.readouterr().out
    assert _manifest(work)["dates"][DAYS[2].isoformat()] == last


@pytest.mark.slow
def test_killed_workers_have_their_date_retried_on_another_worker_a_bounded_number_of_times(
    cluster: str, work: Path, tmp_path: Path, local_dense: dict[str, bytes]
) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    plan = _plan(work, workers=2, retries=1)
    plan.data = StallingData(plan.data.uri(), pid_dir=str(pid_dir), once=(DAYS[1],), always=(DAYS[2],)).open()
    with Killer(pid_dir) as killer:
        summary = execute_ray(plan)
    # DAYS[1]: killed once, then done by another worker; DAYS[2]: killed on its first attempt and its one retry
    assert Counter(day for day, _ in killer.killed) == {DAYS[1].isoformat(): 1, DAYS[2].isoformat(): 2}
    assert len({pid for _, pid in killer.killed}) == 3  # each attempt on its own worker
    assert [r.status for r in summary.results] == ["ok", "ok", "failed"]
    assert "its worker died on each of 2 attempts" in summary.results[2].reason and summary.exit_code == 1
    dates = _manifest(work)["dates"]
    assert dates[DAYS[2].isoformat()]["status"] == "failed" and dates[DAYS[2].isoformat()]["executor"] == "ray"
    assert int(dates[DAYS[1].isoformat()]["worker"].rsplit(":", 1)[1]) not in {pid for _, pid in killer.killed}
    assert _files(work) == {k: v for k, v in local_dense.items() if k != f"{DAYS[2]}.csv"}


@pytest.mark.slow
@pytest.mark.s3
def test_input_and_output_on_the_loopback_s3_server(
    cluster: str, work: Path, s3_bucket: str, local_dense: dict[str, bytes]
) -> None:
    data_uri, store_uri = f"{s3_bucket}/market", f"{s3_bucket}/runs"
    for day in DAYS:
        write_day(data_uri, day, read_day(str(work / "data"), day))
    src, dst = open_store(str(work / "runs")), open_store(store_uri)
    for key in src.list(""):
        dst.write_bytes(key, src.read_bytes(key))
    shutil.rmtree(work / "data")  # the workers must read S3: nothing local is left to read
    assert (
        main(
            ["--run", "jen", "--store", store_uri, "--data", data_uri, "--dates", SPEC, "--dense", "--executor", "ray"]
        )
        == 0
    )
    out = open_store(f"{store_uri}/{INFERENCE}")
    assert {f"{d}.csv": out.read_bytes(f"{d}.csv") for d in DAYS} == local_dense
    manifest = json.loads(out.read_text("manifest.json"))
    assert {manifest["dates"][d.isoformat()]["file"] for d in DAYS} == {
        f"{store_uri}/{INFERENCE}/{d}.csv" for d in DAYS
    }


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tthf.cli.run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )


@pytest.mark.slow
def test_the_command_joins_a_running_cluster_by_address(
    cluster: str, work: Path, local_dense: dict[str, bytes]
) -> None:
    proc = _cli(
        "--run",
        "jen",
        "--store",
        str(work / "runs"),
        "--dates",
        SPEC,
        "--dense",
        "--executor",
        "ray",
        "--ray-address",
        cluster,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"joined {cluster}" in proc.stderr and "3 ok" in proc.stdout
    assert _files(work) == local_dense
    assert _manifest(work)["settings"]["ray"]["address"] == cluster


def test_an_unreachable_cluster_is_a_one_line_error_that_says_how_to_fix_it(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process, even after the cluster tests
    address = f"127.0.0.1:{free_port()}"
    assert _run(work, "--dates", SPEC, "--dense", "--executor", "ray", "--ray-address", address) == 6
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"tthf-run: error: cannot reach the Ray cluster at {address}: nothing answers")
    assert "ray start --head" in last and "omit --ray-address" in last
    assert not _files(work)

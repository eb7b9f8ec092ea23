"""The live service: a real ``tthf-serve`` process on loopback, fed a whole day by the reference client.

The server runs ``--backend auto`` (OpenVINO on a CPU host with the export) over the bench
run, ``--no-clock`` (a past day: only the feeder closes minutes). The client (this process,
``Feeder`` of engine/serving/client.py) sends one minute of every symbol per call and waits for
its reply (lockstep, full speed), for all 390 minutes of the market's last day. Per minute:
the server's time (queue + predictor call + building the replies, from the reply's
metadata), the client's round trip (the call written to its first reply read) and their
difference, the transport both ways (Arrow IPC over gRPC on loopback, and the client's
decoding). Then the server is killed (SIGKILL) and restarted on the day's full journal:
restart to ready is the time from the new process's start to ``/v2/health/ready`` = 200
(Python imports, the run and backend opened, the journal replayed, the day's outputs so far
restored from the outputs file beside it, the warm-up); ``replay_s`` is the part from the
replay on (the server's log). Then once more without the outputs file (``recompute``: the
fallback, every held minute predicted again -- what every restart did before the file).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

from tthf.engine.runtime.outputlog import outputs_path
from tthf.engine.serving.client import Feeder, feed_day
from tthf.engine.testing import free_port


def _ready(http_port: int, proc: subprocess.Popen, timeout: float = 300.0) -> float:
    """Seconds until ``/v2/health/ready`` answers 200."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"tthf-serve exited {proc.returncode}: {proc.stdout.read()[-3000:]}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.02)
    raise AssertionError("tthf-serve was not ready in time")


def test_serving_latency(benchmark, sizes, market, bench_run, tmp_path) -> None:
    day = market.dates[-1]
    port, http_port = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "tthf.cli.serve", "--run", bench_run.run.ref.run_id, "--store", bench_run.store,
        "--journal", str(tmp_path / "journal"), "--day", day.isoformat(), "--backend", "auto", "--no-clock",
        "--port", str(port), "--http-port", str(http_port), "--drain", "5",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def start() -> tuple[subprocess.Popen, float]:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return proc, _ready(http_port, proc)

    calls = feed_day(str(market.root), day)
    if sizes.smoke:
        calls = calls[:45]
    proc, first_ready_s = start()
    reports = []
    logs = []  # the restarted servers' output

    def kill9() -> None:
        proc.kill()
        logs.append(proc.communicate(timeout=30)[0])

    try:
        benchmark.pedantic(lambda: reports.append(Feeder(f"grpc://127.0.0.1:{port}", day, calls).run()), rounds=1)
        kill9()
        proc, restart_s = start()  # the day's full journal, its outputs restored
        kill9()
        outputs_path(tmp_path / "journal", day).unlink()
        proc, recompute_s = start()  # the same, every held minute predicted again
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    logs.append(out)
    report = reports[0]
    assert len(report.round_trip_ms) == len(calls) and report.received.height, out[-2000:]
    summary = report.summary()
    rtt = np.array(list(report.round_trip_ms.values()))
    server = np.array([report.server_ms[s] for s in report.round_trip_ms])
    stages = [m["stages_ms"] for m in report.replies if m.get("kind") == "minute" and "stages_ms" in m]
    backend = next((line.split("(")[1].split(")")[0] for line in out.splitlines() if "served" in line), "?")
    replays = [re.search(r"journal's replay \(([\d.]+) s\)", log) for log in logs[1:]]  # replay + warm-up
    benchmark.group = "serving"
    benchmark.extra_info.update(
        section="serving",
        variant=f"tthf-serve ({backend}) + tthf-feed, loopback",
        units=sizes.symbols,
        unit="symbols",
        minutes=len(calls),
        server_ms=summary["server_ms"],
        round_trip_ms=summary["round_trip_ms"],
        transport_ms=summary["transport_ms"],
        transport_share_median=float(np.median((rtt - server) / rtt)),
        stage_ms_median={k: float(np.median([s[k] for s in stages])) for k in stages[0]},
        first_ready_s=first_ready_s,
        restart_to_ready_s=restart_s,
        replay_s=float(replays[0].group(1)) if replays[0] else None,
        restart_recompute_s=recompute_s,
        replay_recompute_s=float(replays[1].group(1)) if replays[1] else None,
    )

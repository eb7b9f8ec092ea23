"""``tthf-serve`` for a run whose inputs all come from the user's feature files (tests/importing's user-style run):
``tthf-feed --run`` replays the run's files as feature-schema batches, kill -9 mid-day, and the day equals batch."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from servers import WAIT, Market, Server, env

from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.runs import open_run
from tthf.engine.serving import protocol
from tthf.engine.testing import dense_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "importing"))  # the user of tests/importing
from user_pipeline import HOLEY_DAY, import_files_run, make_user, write_feature_root

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def file_market(tmp_path_factory: pytest.TempPathFactory) -> Market:
    """The user-style run imported from feature files (a late-starting symbol and a missing minute on HOLEY_DAY)."""
    base = tmp_path_factory.mktemp("filerun")
    user = make_user(base / "user")
    store = import_files_run(user, write_feature_root(user, base / "features"), base / "store")
    return Market(base, user.data, store)


def test_a_feature_file_run_served_and_killed_mid_day_equals_batch(file_market: Market, tmp_path: Path) -> None:
    server = Server(file_market, tmp_path / "journal", day=HOLEY_DAY, run="jennifer", backend="onnxruntime").start()
    out = tmp_path / "out.parquet"
    cmd = [
        sys.executable, "-m", "tthf.cli.feed", "--run", "jennifer", "--store", str(file_market.store),
        "--date", HOLEY_DAY.isoformat(), "--to", server.address, "--out", str(out), "--speed", "3000x",
        "--reconnect", str(WAIT), "--timeout", str(WAIT * 3),
    ]  # fmt: skip
    feed = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT
        while (server.live().get("minute") or "") < "2024-01-04T17:00" and time.monotonic() < deadline:
            time.sleep(0.05)
        server.signal(signal.SIGKILL)
        server.start()  # the same ports and journal: it replays the feature rows it holds
        stdout, stderr = feed.communicate(timeout=WAIT * 3)
    finally:
        feed.kill()
        server.stop()
    assert feed.returncode == 0, stderr[-3000:]
    assert "390 minutes answered" in stdout and "2 connection(s)" in stdout, stdout
    received = pl.read_parquet(out)
    assert (received["kind"] == protocol.HELLO).any()
    got = protocol.final_outputs(received)
    want = dense_batch(open_run(str(file_market.store), "jennifer"), None, HOLEY_DAY, "onnxruntime")
    assert got.select("ts", "symbol", "source_ts").equals(want.select("ts", "symbol", "source_ts"))
    # ONNX Runtime rounds a window by the size of its batch (minutes vs the day): the same inputs (bit for bit in
    # tests/importing/test_import_files.py, OneByOne) give the outputs to an ulp or two
    for name in OUTPUT_NAMES:
        assert np.allclose(got[name].to_numpy(), want[name].to_numpy(), rtol=2e-6, atol=0), name

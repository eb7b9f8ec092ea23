"""A real ``tthf-serve`` process on loopback, and the market it serves (tests/serving; conftest.py has the fixtures)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from tthf.engine import runs
from tthf.engine.data.marketdata import read_day
from tthf.engine.testing import DAYS, dense_batch, free_port

#: the tests' HTTPS probes trust the server's self-signed certificate (the Flight client checks it)
_UNVERIFIED = ssl._create_unverified_context()
#: seconds any wait of these tests may take before it fails
WAIT = 60.0


@dataclass
class Market:
    """A tiny market of ``DAYS`` and a run over it, with each day's batch file (``tthf-run --dense``)."""

    base: Path
    data: Path
    store: Path
    batches: dict = field(default_factory=dict)

    def batch(self, day) -> pl.DataFrame:  # type: ignore[no-untyped-def]
        if day not in self.batches:
            run = runs.Run.open(runs.find_run(str(self.store), "jen"))
            self.batches[day] = dense_batch(run, read_day(str(self.data), day), day)
        return self.batches[day]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


class Server:
    """``tthf-serve`` as a child process on free loopback ports (backend torch: what ``dense_batch`` runs)."""

    def __init__(
        self, market: Market, journal: Path, *args: str, day=DAYS[1], token: str | None = None, tls: bool = False,
        run: str = "jen", backend: str = "torch",
    ) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
        self.port, self.http_port = free_port(), free_port()
        self.cmd = [
            sys.executable, "-m", "tthf.cli.serve", "--run", run, "--store", str(market.store),
            "--journal", str(journal), "--day", day.isoformat(), "--backend", backend,
            "--port", str(self.port), "--http-port", str(self.http_port), "--drain", "5", *args,
        ]  # fmt: skip
        self.env = env() | ({"TTHF_SERVE_TOKEN": token} if token else {})
        self.token = token
        self.scheme = ("grpc+tls", "https") if tls else ("grpc", "http")
        self.proc: subprocess.Popen[str] | None = None
        self.first_ready: int | None = None  # the first /v2/health/ready status seen after a start

    @property
    def address(self) -> str:
        return f"{self.scheme[0]}://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.first_ready = None
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tthf-serve exited {self.proc.returncode}: {self.proc.stdout.read()[-3000:]}")  # type: ignore[union-attr]
            code = self.http("/v2/health/ready")[0]
            if code and self.first_ready is None:
                self.first_ready = code
            if code == 200:
                return self
            time.sleep(0.05)
        raise AssertionError("tthf-serve was not ready in time")

    def http(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        """(status, body) of a GET on the HTTP port; (0, b"") when nothing answers."""
        request = urllib.request.Request(f"{self.scheme[1]}://127.0.0.1:{self.http_port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5, context=_UNVERIFIED) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, b""

    def live(self) -> dict:
        return json.loads(self.http("/api/live", self.token)[1])

    def signal(self, sig: int) -> str:
        """Send ``sig``, wait for the exit (bounded); the process's output."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=WAIT)
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)


def feed_cmd(market: Market, server: Server, day, out: Path, *args: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        sys.executable, "-m", "tthf.cli.feed", str(market.data), "--date", day.isoformat(), "--to", server.address,
        "--out", str(out), "--timeout", str(WAIT * 3), *args,
    ]  # fmt: skip

"""tests/serving's fixtures: the market and run, and tthf-serve processes that end with the test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Market, Server

from tthf.engine.testing import make_data, make_run


@pytest.fixture(scope="package")
def market(tmp_path_factory: pytest.TempPathFactory) -> Market:
    base = tmp_path_factory.mktemp("serving")
    data = make_data(base / "data", n_symbols=6)
    make_run(str(base / "runs"), data)
    return Market(base, data, base / "runs")


@pytest.fixture
def server_factory(market: Market, tmp_path: Path) -> Iterator:
    """Servers started by a test, each stopped (SIGTERM) at its end."""
    started: list[Server] = []

    def make(*args: str, **kw) -> Server:  # type: ignore[no-untyped-def]
        server = Server(market, tmp_path / "journal", *args, **kw)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        try:
            server.stop()
        except subprocess.TimeoutExpired:
            server.proc.kill()  # type: ignore[union-attr]

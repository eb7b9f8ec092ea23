"""``tthf-serve``'s one library call: open the run, start HTTP then Flight, replay, serve until SIGTERM, drain.

Order at start: the HTTP port first (live, not ready), then the run and its backend (the
compile), the Flight port, the journal's replay and a warm-up; ready after that. At
SIGTERM (or SIGINT): not ready at once, the loop finishes the call in hand and the queued
ones within ``drain_s``, every connection is told to reconnect, and the ports close within
``drain_s`` more (``ServeSummary.forced`` when they did not: the caller exits anyway; the
journal is fsync'd at every call, so nothing accepted is lost).
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tthf.engine.data.calendar import is_trading_day, timezone
from tthf.engine.runtime.backends.tensorrt import Rebuild
from tthf.engine.runtime.realtime import RealtimePredictor
from tthf.engine.serving.flight import FlightService
from tthf.engine.serving.metrics import ServeMetrics
from tthf.engine.serving.service import Service
from tthf.engine.serving.web import WebServer
from tthf.engine.store import Store

log = logging.getLogger("tthf.serve")


@dataclass(frozen=True)
class ServeOptions:
    """Where and how ``serve`` listens and predicts (docs/serving.md; tthf-serve --help)."""

    journal: str
    day: dt.date | None = None  # None: today in the run's exchange time
    host: str = "127.0.0.1"
    port: int = 8815
    http_port: int = 8816
    backend: str = "auto"
    queue: int = 64
    grace_s: float | None = 2.0  # a minute of today closes at its end plus this; None: only the feeder closes
    drain_s: float = 10.0
    token: str | None = field(default=None, repr=False)
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass
class ServeSummary:
    run: str
    backend: str
    day: dt.date | None
    held: dt.datetime | None
    ready_s: float  # start to ready
    served_s: float = 0.0
    drained: bool = True
    forced: bool = False  # the ports did not close within drain_s


def serve(
    store: Store | str,
    run: str,
    options: ServeOptions,
    *,
    rebuild: Rebuild | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> ServeSummary:
    """Serve ``run`` until SIGTERM or SIGINT; ``rebuild`` makes a TensorRT engine for this GPU when the
    run's is stale (export's); ``on_ready`` gets the Flight address once ready."""
    t0 = time.perf_counter()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = ServeMetrics()
    web = WebServer(metrics, options.host, options.http_port, token=options.token, tls=_http_tls(options))
    web.serve_in_thread()
    grace = dt.timedelta(seconds=options.grace_s) if options.grace_s is not None else None
    predictor = RealtimePredictor.from_run(
        store, run, backend=options.backend, rebuild=rebuild, journal=options.journal
    )
    service = Service(predictor, metrics, queue_bound=options.queue, grace=grace)
    web.service = service
    scheme = "grpc+tls" if options.tls_cert else "grpc"
    address = f"{scheme}://{options.host}:{options.port}"
    tls = (
        (options.tls_cert.read_bytes(), options.tls_key.read_bytes()) if options.tls_cert and options.tls_key else None
    )
    flight = FlightService(service, address, token=options.token, tls=tls)
    held = service.start(options.day or _today(predictor))
    summary = ServeSummary(
        predictor.run.ref.run_id, predictor.backend.name, service.day, held, time.perf_counter() - t0
    )
    log.info("ready in %.2f s: Flight %s, HTTP %s:%d", summary.ready_s, address, options.host, options.http_port)
    if on_ready is not None:
        on_ready(address)
    while not stop.wait(0.5):
        pass
    log.info("stopping: draining the queue (at most %.0f s)", options.drain_s)
    summary.drained = service.stop(options.drain_s)
    closer = threading.Thread(target=flight.shutdown, daemon=True)
    closer.start()
    closer.join(options.drain_s)
    summary.forced = closer.is_alive()
    web.shutdown()
    summary.served_s = time.perf_counter() - t0
    return summary


def _today(predictor: RealtimePredictor) -> dt.date | None:
    """Today in the run's exchange time, or None when the exchange is closed today (wait for a feeder's day)."""
    calendar = predictor.run.config.calendar
    today = dt.datetime.now(timezone(calendar)).date()
    return today if is_trading_day(today, calendar) else None


def _http_tls(options: ServeOptions) -> ssl.SSLContext | None:
    if not options.tls_cert or not options.tls_key:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(options.tls_cert), str(options.tls_key))
    return context

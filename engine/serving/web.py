"""The service's HTTP port: health (KServe / Open Inference Protocol names), Prometheus metrics, the live page.

- ``/v2/health/live``: 200 while the loop comes round (503 when it stalls);
- ``/v2/health/ready``: 200 once the model is compiled, warmed up and the journal replayed;
  503 while starting, switching day or shutting down;
- ``/metrics``: Prometheus text; ``/api/live``: the live page's JSON; ``/``: the live page.

With a token, ``/metrics`` and ``/api/live`` need ``Authorization: Bearer <token>``; the
health probes and the page's HTML (which holds no data; it reads the token from the
address's ``#token=`` fragment, which browsers never send) do not. Requests are not logged,
so no credential reaches a log.
"""

from __future__ import annotations

import hmac
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tthf.engine.serving.metrics import ServeMetrics
from tthf.engine.serving.page import PAGE
from tthf.engine.serving.protocol import encode
from tthf.engine.serving.service import Service


class WebServer(ThreadingHTTPServer):
    """The HTTP port: up before the model loads (live, not ready), over the ``Service`` once there is one."""

    daemon_threads = True

    def __init__(
        self,
        metrics: ServeMetrics,
        host: str,
        port: int,
        *,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.metrics = metrics
        self.service: Service | None = None  # set once the predictor is loaded; until then: live, not ready
        self.expected = f"Bearer {token}".encode() if token else None
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: WebServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        service = self.server.service
        path = self.path.split("?")[0]
        if path == "/v2/health/live":
            ok = service is None or service.live()
            self._send(200 if ok else 503, b'{"live":%s}' % (b"true" if ok else b"false"), "application/json")
        elif path == "/v2/health/ready":
            ok = service is not None and service.ready.is_set()
            self._send(200 if ok else 503, b'{"ready":%s}' % (b"true" if ok else b"false"), "application/json")
        elif path == "/":
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif path in ("/metrics", "/api/live") and not self._authorized():
            self._send(401, b'{"error":"missing or wrong bearer token"}', "application/json")
        elif path == "/metrics":
            self._send(200, self.server.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/api/live":
            body = encode(service.status()) if service is not None else b'{"error":"starting: loading the model"}'
            self._send(200 if service is not None else 503, body, "application/json")
        else:
            self._send(404, json.dumps({"error": f"no such path {path}"}).encode(), "application/json")

    def _authorized(self) -> bool:
        expected = self.server.expected
        sent = (self.headers.get("Authorization") or "").encode()
        return expected is None or hmac.compare_digest(sent, expected)

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (a header or query could hold a credential)."""

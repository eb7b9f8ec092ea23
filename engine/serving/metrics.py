"""The service's Prometheus metrics (docs/serving.md, "Metrics"), in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: stage latency buckets, seconds: 1 ms to 5 s, dense where the targets are (25 ms, 150 ms)
BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)


class ServeMetrics:
    """Every number ``/metrics`` shows; the service updates them, the HTTP thread reads them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage = Histogram(
            "tthf_serve_stage_seconds",
            "Seconds per predictor call by stage: queue (waiting in the input queue), ingest, features, "
            "predict, total (the predictor call), reply (handing the replies out)",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.rows = Counter("tthf_serve_rows", "Input rows received (accepted or rejected)", registry=r)
        self.rejected = Counter("tthf_serve_rejected_rows", "Input rows rejected, by reason", ["reason"], registry=r)
        self.late = Counter("tthf_serve_late_rows", "Rows applied to minutes already closed", registry=r)
        self.minutes = Counter("tthf_serve_minutes", "Minutes closed and predicted", registry=r)
        self.predictions = Counter("tthf_serve_predictions", "Prediction rows sent for closed minutes", registry=r)
        self.revisions = Counter("tthf_serve_revision_rows", "Revision rows sent (earlier minutes)", registry=r)
        self.batched = Counter("tthf_serve_batched_calls", "Queued calls predicted together with another", registry=r)
        self.refused = Counter("tthf_serve_refused", "Refused feeds and batches, by why", ["why"], registry=r)
        self.errors = Counter(
            "tthf_serve_call_errors", "Predictor calls that failed (a usage or data error)", registry=r
        )
        self.queue_depth = Gauge("tthf_serve_queue_depth", "Calls waiting in the input queue", registry=r)
        self.queue_bound = Gauge("tthf_serve_queue_bound", "The input queue's bound", registry=r)
        self.subscribers = Gauge("tthf_serve_subscribers", "Connected DoGet subscribers", registry=r)
        self.feeding = Gauge("tthf_serve_feeding", "1 while a feeding client is connected", registry=r)
        self.ready = Gauge("tthf_serve_ready", "1 once compiled, warmed up and the journal replayed", registry=r)
        self.closed = Gauge(
            "tthf_serve_last_closed_timestamp_seconds", "The last minute closed (Unix time)", registry=r
        )
        self.backend = Gauge(
            "tthf_serve_backend_info", "The inference backend serving (value 1)", ["backend"], registry=r
        )
        self.replay = Gauge(
            "tthf_serve_replay_seconds", "Seconds the last start spent replaying the journal", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

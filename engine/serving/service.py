"""The live service's core: one day's feed into one ``RealtimePredictor``, a bounded queue, the replies.

Threads: the transport's (Flight handlers, HTTP) call ``connect_feeder``, ``submit``,
``subscribe``, ``latest`` and ``status``; one loop thread owns the predictor and takes the
queued calls. When it falls behind, it takes every call waiting and makes them one
predictor call (the predictor predicts every minute they close, in one batch: nothing is
skipped); beyond the queue's bound ``submit`` refuses with a ``retry`` status instead of
growing. The predictor's journal is the service's state: ``start`` replays it, and a
reconnecting client is told the last minute held (docs/serving.md, "State and restart").
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from tthf.engine import predictions
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data.calendar import timezone
from tthf.engine.runtime.realtime import RealtimePredictor, Update
from tthf.engine.serving.metrics import ServeMetrics
from tthf.engine.serving.protocol import ACK, HELLO, MINUTE, REVISION, final_outputs
from tthf.errors import ServiceError, TthfError

log = logging.getLogger("tthf.serve")

#: seconds the loop waits for a call before it looks at the wall clock and the stop flag
TICK = 0.2
#: replies a connection may leave unread before it is dropped (a subscriber; a feeder gets more)
OUTBOX = 512
#: server milliseconds kept for the live page's latency line
RECENT = 400


class Refused(ServiceError):
    """A feed or batch the service will not take; ``retry``: the same again later may succeed."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass
class Reply:
    """One message to a client: a kind (protocol), prediction rows, JSON metadata."""

    kind: str
    frame: pl.DataFrame
    meta: dict[str, Any]


class Outbox:
    """The replies waiting for one connection's writer, bounded; a connection that stops reading is dropped."""

    def __init__(self, bound: int, client: str | None = None) -> None:
        self.queue: queue.Queue[Reply | ServiceError | None] = queue.Queue(bound)
        self.client = client
        self.pending = 0  # calls submitted through it and not replied yet (the service's lock)
        self.input_done = threading.Event()

    def put(self, item: Reply | ServiceError | None) -> bool:
        try:
            self.queue.put_nowait(item)
            return True
        except queue.Full:
            return False

    def finished(self) -> bool:
        """Its client stopped sending and every call it sent is answered."""
        return self.input_done.is_set() and self.pending == 0


@dataclass
class Call:
    """One predictor call a feeding client made: its rows, the minute it closes, its number."""

    rows: pa.Table
    close: dt.datetime
    seq: int
    box: Outbox
    queued: float = field(default_factory=time.perf_counter)


class Service:
    """One run's live predictions for one trading day at a time (docs/serving.md)."""

    def __init__(
        self,
        predictor: RealtimePredictor,
        metrics: ServeMetrics | None = None,
        *,
        queue_bound: int = 64,
        grace: dt.timedelta | None = dt.timedelta(seconds=2),
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
        stall_s: float = 60.0,
    ) -> None:
        self.rt = predictor
        self.metrics = metrics or ServeMetrics()
        self.queue: queue.Queue[Call] = queue.Queue(queue_bound)
        self.bound = queue_bound
        self.grace = grace
        self.now = now
        self.stall_s = stall_s
        self.lock = threading.Lock()  # the sessions, the day's replies, what was accepted
        self.work = threading.Lock()  # the predictor: the loop's calls, a day switch
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.feeder: Outbox | None = None
        self.subscribers: list[Outbox] = []
        self.log: list[pl.DataFrame] = []  # every reply's rows of the day, in order
        self.latest: Reply = Reply(MINUTE, predictions.empty(), {})
        self.accepted: dt.datetime | None = None  # the last minute a call accepted closes
        self.last_seq: int | None = None  # the last call accepted, of client ``last_client``
        self.last_client: str | None = None
        self.recent_ms: collections.deque[float] = collections.deque(maxlen=RECENT)
        self.last_input = 0.0  # monotonic time of the last call accepted
        self.heartbeat = time.monotonic()
        self.thread = threading.Thread(target=self._loop, name="tthf-serve-loop", daemon=True)
        self.metrics.queue_bound.set(queue_bound)
        self.metrics.backend.labels(predictor.backend.name).set(1)

    # -- the day -----------------------------------------------------------------------------------

    @property
    def day(self) -> dt.date | None:
        return self.rt.day

    def start(self, day: dt.date | None) -> dt.datetime | None:
        """Replay ``day``'s journal (None: wait for a feeder's day), warm the backend up, then be ready.

        Returns the last minute held. The replayed minutes' rows are the day's first replies
        (a reconnecting client gets them in its hello). Starts the loop on the first call.
        """
        self.ready.clear()
        self.metrics.ready.set(0)
        t0 = time.perf_counter()
        held = None
        with self.work:
            if day is not None:
                held = self.rt.reset(day)
                replayed = self.rt.replayed()
                self.rt.clock = self._clock_for(day)
                if self.rt.clock is not None and self.grace is not None:
                    self.rt.grace = self.grace
            self._warm()
        with self.lock:
            self.log = [replayed] if day is not None else []
            self.accepted, self.last_seq, self.last_client = held, None, None
            last = replayed.filter(pl.col("ts") == held) if held is not None else predictions.empty()
            self.latest = Reply(MINUTE, last, {"minute": held, "replayed": True})
        self.metrics.replay.set(time.perf_counter() - t0)
        if held is not None:
            self.metrics.closed.set(held.timestamp())
        log.info("serving %s: %s held after the journal's replay (%.2f s)", day, held, time.perf_counter() - t0)
        if not self.thread.is_alive():
            self.thread.start()
        self.ready.set()
        self.metrics.ready.set(1)
        return held

    def _clock_for(self, day: dt.date) -> Callable[[], dt.datetime] | None:
        """The wall clock closes minutes only when serving today (a past day is closed by its feeder)."""
        today = self.now().astimezone(timezone(self.rt.run.config.calendar)).date()
        return self.now if self.grace is not None and day == today else None

    def _warm(self) -> None:
        """One backend call at a minute's size and one at a catch-up's, so the first minute pays no compile."""
        shape = (self.rt.seq_len, len(self.rt.feature_names))
        for n in (1, 256):
            self.rt.backend.predict(np.zeros((n, *shape), dtype=np.float32))

    # -- connections -----------------------------------------------------------------------------

    def connect_feeder(self, day: dt.date, client: str) -> Outbox:
        """The outbox of the one feeding client of ``day``; its first reply is the hello."""
        if not self.ready.is_set() or self.stopping.is_set():
            why = "shutting down" if self.stopping.is_set() else "not ready (loading, warming up or replaying)"
            raise Refused(f"retry retry_after_ms=1000: the server is {why}", retry=True)
        if day != self.day:
            self._switch(day)
        with self.lock:
            if self.feeder is not None:
                self.metrics.refused.labels("second_feeder").inc()
                raise Refused(f"busy: another client is feeding {day}; one feeding client per day", retry=False)
            box = Outbox(OUTBOX + 4 * self.bound, client)
            seq = self.last_seq if client == self.last_client else None
            meta = {"day": day, "held": self.accepted, "seq": seq, "run": self.rt.run.ref.run_id}
            box.put(Reply(HELLO, final_outputs(pl.concat(self.log)) if self.log else predictions.empty(), meta))
            self.feeder = box
            self.metrics.feeding.set(1)
        return box

    def _switch(self, day: dt.date) -> None:
        """Serve ``day`` instead, when nothing of the current day is in flight."""
        with self.lock:
            busy = self.feeder is not None or not self.queue.empty()
        if busy:
            self.metrics.refused.labels("other_day").inc()
            raise Refused(f"busy: serving {self.day}, whose feed is still connected or queued", retry=False)
        self.start(day)

    def release(self, box: Outbox) -> None:
        with self.lock:
            if self.feeder is box:
                self.feeder = None
                self.metrics.feeding.set(0)

    def subscribe(self) -> Outbox:
        box = Outbox(OUTBOX)
        with self.lock:
            self.subscribers.append(box)
            self.metrics.subscribers.set(len(self.subscribers))
        return box

    def unsubscribe(self, box: Outbox) -> None:
        with self.lock:
            if box in self.subscribers:
                self.subscribers.remove(box)
            self.metrics.subscribers.set(len(self.subscribers))

    def submit(self, box: Outbox, rows: pa.Table, close: dt.datetime, seq: int) -> None:
        """Queue one call of the feeder ``box``; ``Refused`` (retry) when the queue is at its bound."""
        if self.stopping.is_set():
            raise Refused("retry retry_after_ms=2000: the server is shutting down; reconnect and resend", retry=True)
        with self.lock:
            try:
                self.queue.put_nowait(Call(rows, close, seq, box))
            except queue.Full:
                self.metrics.refused.labels("overload").inc()
                wait = int(max(100, self.bound * (np.median(self.recent_ms) if self.recent_ms else 10)))
                raise Refused(
                    f"retry retry_after_ms={wait}: the input queue holds {self.bound} calls, its bound (the model is "
                    f"behind); reconnect after the wait and resend from the minute the server reports "
                    f"({self.accepted.isoformat() if self.accepted else 'none'})",
                    retry=True,
                ) from None
            box.pending += 1
            self.accepted = close if self.accepted is None else max(self.accepted, close)
            self.last_seq, self.last_client = seq, box.client
            self.last_input = time.monotonic()
            self.metrics.rows.inc(rows.num_rows)
            self.metrics.queue_depth.set(self.queue.qsize())

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            try:
                calls = [self.queue.get(timeout=TICK)]
            except queue.Empty:
                if self.stopping.is_set():
                    return
                if self.rt.clock is not None and not self.rt.day_closed:
                    self._process([])  # the wall clock may close a minute
                continue
            while True:  # behind: every call waiting goes into one predictor call
                try:
                    calls.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            self.metrics.queue_depth.set(self.queue.qsize())
            self._process(calls)

    def _process(self, calls: list[Call]) -> None:
        t0 = time.perf_counter()
        close = max(c.close for c in calls) if calls else None
        seqs = [c.seq for c in calls]
        try:
            rows = pa.concat_tables([c.rows for c in calls]) if calls else None  # one stream: one schema
            with self.work:
                before = self.rt.closed
                update = self.rt.update(rows, close=close)
        except (TthfError, pa.ArrowException) as exc:  # a close on another day, a batch of another schema
            self.metrics.errors.inc()
            log.warning("calls %s failed: %s", seqs, exc)
            self._deliver([Reply(ACK, predictions.empty(), {"seqs": seqs, "error": str(exc)})], calls)
            return
        if not calls and self.rt.closed == before:
            return  # a clock tick that closed nothing
        replies = self._replies(update, before, calls, t0)
        self._deliver(replies, calls)
        self._count(update, calls, t0, replies)

    def _replies(self, update: Update, before: int, calls: list[Call], t0: float) -> list[Reply]:
        """One reply per minute this call closed, one with its revisions; an ack when it has neither."""
        grid = self.rt.grid
        assert grid is not None
        seconds = update.seconds
        meta: dict[str, Any] = {
            "seqs": [c.seq for c in calls],
            "batched": len(calls),
            "rows_in": sum(c.rows.num_rows for c in calls),
            "counts": update.counts,
            "rejected": update.rejected,
            "late_rows": update.late_rows,
            "closed": update.closed,
            "day_closed": update.day_closed,
            "stages_ms": {k: round(v * 1e3, 3) for k, v in seconds.items()},
            "queue_ms": round((t0 - min(c.queued for c in calls)) * 1e3, 3) if calls else 0.0,
        }
        replies = []
        by_minute = update.predictions.partition_by("ts", as_dict=True) if update.predictions.height else {}
        symbols = set(grid.symbols)
        for t in range(before + 1, self.rt.closed + 1):
            minute = grid.minutes[t].astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc)
            frame = by_minute.get((minute,), predictions.empty())
            missing = sorted(symbols.difference(frame.get_column("symbol").to_list()))
            why = "warm-up: fewer minutes than a window" if t < self.rt.seq_len - 1 else "no usable quote in the window"
            none = {"count": len(missing), "reason": why if missing else None, "symbols": missing[:20]}
            replies.append(Reply(MINUTE, frame, {**meta, "minute": minute, "no_prediction": none}))
        if update.revisions.height:
            replies.append(Reply(REVISION, update.revisions, {**meta, "minute": update.closed}))
        if not replies:
            replies.append(Reply(ACK, predictions.empty(), {**meta, "minute": update.closed}))
        server_ms = round((time.perf_counter() - t0) * 1e3, 3)
        for reply in replies:
            reply.meta["server_ms"] = server_ms
        replies[-1].meta["last"] = True  # a client reading in step knows the call is answered
        return replies

    def _deliver(self, replies: list[Reply], calls: list[Call]) -> None:
        """To the feeder and every subscriber; a connection whose outbox is full is dropped."""
        with self.lock:
            for reply in replies:
                if reply.frame.height:
                    self.log.append(reply.frame)
                if reply.kind == MINUTE:
                    self.latest = reply
                for box in [*([self.feeder] if self.feeder is not None else []), *self.subscribers]:
                    if not box.put(reply):
                        self._drop(box)
            for call in calls:
                call.box.pending -= 1

    def _drop(self, box: Outbox) -> None:
        """A connection that left its replies unread: it ends with a retry status (it reconnects and catches up)."""
        self.metrics.refused.labels("slow_reader").inc()
        with box.queue.mutex:
            box.queue.queue.clear()
        box.put(Refused("retry retry_after_ms=100: replies were left unread past the bound; reconnect", retry=True))
        if box in self.subscribers:
            self.subscribers.remove(box)
        elif box is self.feeder:
            self.feeder = None
            self.metrics.feeding.set(0)

    def _count(self, update: Update, calls: list[Call], t0: float, replies: list[Reply]) -> None:
        m = self.metrics
        for c in calls:
            m.stage.labels("queue").observe(t0 - c.queued)
        for stage, seconds in update.seconds.items():
            m.stage.labels(stage).observe(seconds)
        server_ms = replies[0].meta["server_ms"]
        m.stage.labels("reply").observe(server_ms / 1e3 - update.seconds.get("total", 0.0))
        for reason, n in update.rejected.items():
            if n:
                m.rejected.labels(reason).inc(n)
        m.late.inc(update.late_rows)
        m.minutes.inc(sum(r.kind == MINUTE for r in replies))
        m.predictions.inc(update.predictions.height)
        m.revisions.inc(update.revisions.height)
        if len(calls) > 1:
            m.batched.inc(len(calls) - 1)
        if update.closed is not None:
            m.closed.set(update.closed.timestamp())
        self.recent_ms.append(server_ms)

    # -- health, the page, the end -----------------------------------------------------------------

    def live(self) -> bool:
        """False when the loop has not come round for ``stall_s`` (stuck in a call, or dead); starting is alive."""
        if not self.ready.is_set() and not self.stopping.is_set():
            return True
        return self.thread.is_alive() and time.monotonic() - self.heartbeat < self.stall_s

    def status(self, top: int = 8) -> dict[str, Any]:
        """What the live page shows: the latest minute's extremes, latency and the feed's health."""
        with self.lock:
            latest = self.latest
            feeding = self.feeder is not None
            age = time.monotonic() - self.last_input if self.last_input else None
        frame = latest.frame
        ret, vol = OUTPUT_NAMES[0], OUTPUT_NAMES[1]

        def rows(sort: str, descending: bool) -> list[dict[str, Any]]:
            picked = frame.sort(sort, descending=descending, nulls_last=True).head(top)
            return picked.select("symbol", ret, vol).to_dicts()

        recent = np.array(self.recent_ms) if self.recent_ms else np.zeros(1)
        m = self.metrics
        return {
            "run": self.rt.run.ref.run_id,
            "backend": self.rt.backend.name,
            "day": self.day,
            "ready": self.ready.is_set(),
            "minute": latest.meta.get("minute"),
            "symbols": frame.height,
            "no_prediction": latest.meta.get("no_prediction", {}).get("count", 0),
            "strongest": rows(ret, True),
            "weakest": rows(ret, False),
            "volatile": rows(vol, True),
            "latency_ms": {q: round(float(np.percentile(recent, int(q[1:]))), 2) for q in ("p50", "p95", "p99")},
            "feeding": feeding,
            "input_age_s": None if age is None else round(age, 1),
            "queue": self.queue.qsize(),
            "bound": self.bound,
            "rows": sum(int(s.value) for s in _totals(m.rows)),
            "late_rows": sum(int(s.value) for s in _totals(m.late)),
            "revision_rows": sum(int(s.value) for s in _totals(m.revisions)),
            "rejected": {s.labels["reason"]: int(s.value) for s in _totals(m.rejected)},
        }

    def stop(self, drain_s: float) -> bool:
        """Not ready at once; the loop finishes the call in hand and the queued ones within ``drain_s``;
        then every connection is told to reconnect. True when the queue drained in time."""
        self.ready.clear()
        self.metrics.ready.set(0)
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(drain_s)
        drained = not self.thread.is_alive()
        with self.lock:
            for box in [*([self.feeder] if self.feeder else []), *self.subscribers]:
                box.put(Refused("retry retry_after_ms=2000: the server is shutting down; reconnect", retry=True))
        return drained


def _totals(counter: Any) -> list[Any]:
    """A counter's ``_total`` samples (one per label set), read through the public ``collect``."""
    return [s for family in counter.collect() for s in family.samples if s.name.endswith("_total")]

"""The feeding client (``tthf-feed``): sends a day's calls to ``tthf-serve`` and keeps every reply.

    calls = plan(day_sends(read_day(data, day), day))   # one call per minute, closing it
    report = Feeder("grpc://127.0.0.1:8815", day, calls).run()
    final_outputs(report.received)                       # the day's outputs, revisions applied

A connection that breaks (the server restarted, or refused with ``retry``) is opened again
within ``reconnect_s``; the server's hello says what it holds, and the client resends every
call after it: by ``seq`` when the same server still has this client's calls, else every
call whose close is after the minute held (a restarted server replays its journal up to the
call that closed that minute). ``busy`` and ``token`` refusals end the feed with a
``ServiceError``. docs/serving.md, "The protocol".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.flight as fl

from tthf.engine import predictions
from tthf.engine.config import DEFAULT_CALENDAR, OUTPUT_NAMES, FeatureFiles
from tthf.engine.data import marketdata
from tthf.engine.data.calendar import session_minutes
from tthf.engine.data.featurefiles import read_feature_day
from tthf.engine.data.marketdata import read_day
from tthf.engine.runs import Run
from tthf.engine.serving import protocol
from tthf.engine.store import Store, open_store
from tthf.errors import ServiceError, UsageError

#: columns of ``FeedReport.received`` beside the predictions file's: the reply's kind and number
RECEIVED_EXTRA = {"kind": pl.String(), "reply": pl.Int64()}


@dataclass(frozen=True)
class FeedCall:
    """One predictor call: its rows, the minute it closes, its number, and the latest minute closed once it is in."""

    seq: int
    minute: dt.datetime
    rows: pa.Table
    close: dt.datetime


def day_sends(
    raw: pl.DataFrame, day: dt.date, calendar: str = DEFAULT_CALENDAR
) -> list[tuple[pl.DataFrame, dt.datetime]]:
    """A day as a feed sends it: each session minute's rows, closing it (earlier rows go with the first minute,
    later ones with the last)."""
    minutes = [
        m.astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc) for m in session_minutes(day, calendar)
    ]
    key = pl.col("ts").clip(minutes[0], minutes[-1]).alias("_minute")
    parts = raw.with_columns(key).partition_by("_minute", as_dict=True, include_key=False)
    empty = raw.clear()
    return [(parts.get((m,), empty), m) for m in minutes]


def plan(sends: Sequence[tuple[pl.DataFrame | pa.Table, dt.datetime]], *, raw: bool = True) -> list[FeedCall]:
    """The calls of ``sends`` (rows, minute it closes) in order: numbered, in the raw schema (``raw``) or as given
    (a feature-file run's rows: every call in one schema)."""
    calls, close = [], None
    for seq, (rows, minute) in enumerate(sends):
        table = rows if isinstance(rows, pa.Table) else rows.to_arrow()
        close = minute if close is None else max(close, minute)
        table = marketdata.conform(table, "the feed") if raw else table
        calls.append(FeedCall(seq, minute, table.combine_chunks(), close))
    return calls


def feed_day(data: Store | str, day: dt.date, calendar: str = DEFAULT_CALENDAR) -> list[FeedCall]:
    """The calls that replay ``day`` of the data root ``data``, one per session minute."""
    return plan(day_sends(read_day(data, day, calendar=calendar), day, calendar))


def feed_files(store: Store, files: FeatureFiles, day: dt.date, calendar: str = DEFAULT_CALENDAR) -> list[FeedCall]:
    """The calls that replay ``day`` of a feature-file run's files (``store`` is their root): each session minute's
    rows, closing it, in the feature schema: the files' symbol and ts columns and the run's columns (Float64)."""
    rows = read_feature_day(store, files, day, files.columns)
    named = {"symbol": files.symbol, "ts": files.ts}  # as the run's [features.columns] names them
    return plan([(part.rename(named), minute) for part, minute in day_sends(rows, day, calendar)], raw=False)


def feed_run(run: Run, day: dt.date, *, endpoint_url: str | None = None) -> list[FeedCall]:
    """The calls that replay ``day`` of ``run``'s own inputs: its feature files when every input comes from them,
    else the raw bars of its data root."""
    cfg = run.config
    if cfg.feature_files is None:
        return feed_day(open_store(cfg.data_root, endpoint_url=endpoint_url), day, cfg.calendar)
    if cfg.computed_names:
        raise UsageError(
            f"run {run.ref.name} reads feature files beside raw bars; tthf-serve serves runs whose inputs all come "
            "from raw bars or all from feature files"
        )
    files = cfg.feature_files
    return feed_files(open_store(files.root, endpoint_url=endpoint_url), files, day, cfg.calendar)


@dataclass
class FeedReport:
    """What a feed received and how long each call took (milliseconds, by call ``seq``)."""

    received: pl.DataFrame  # every reply row in arrival order: predictions.COLUMNS + kind, reply
    replies: list[dict[str, Any]] = field(default_factory=list)  # every reply's metadata
    round_trip_ms: dict[int, float] = field(default_factory=dict)  # call sent -> its first reply
    server_ms: dict[int, float] = field(default_factory=dict)  # the server's time (queue + call + replies)
    connects: int = 0
    refusals: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """p50/p95/p99/max of round trip, server time and their difference (transport, both ways)."""
        seqs = sorted(set(self.round_trip_ms) & set(self.server_ms))
        rtt = np.array([self.round_trip_ms[s] for s in seqs]) if seqs else np.zeros(0)
        server = np.array([self.server_ms[s] for s in seqs]) if seqs else np.zeros(0)
        out: dict[str, Any] = {"calls": len(seqs), "connects": self.connects, "refusals": len(self.refusals)}
        out["errors"] = [m["error"] for m in self.replies if "error" in m]  # calls the server could not apply
        for name, values in (("round_trip_ms", rtt), ("server_ms", server), ("transport_ms", rtt - server)):
            if len(values):
                out[name] = {q: round(float(np.percentile(values, p)), 3) for q, p in _QUANTILES} | {
                    "max": round(float(values.max()), 3)
                }
        return out


_QUANTILES = (("p50", 50), ("p95", 95), ("p99", 99))


class Feeder:
    """Feeds ``calls`` of ``day`` to the server at ``address`` (``grpc://host:port`` or ``grpc+tls://``)."""

    def __init__(
        self,
        address: str,
        day: dt.date,
        calls: Sequence[FeedCall],
        *,
        token: str | None = None,
        tls_root: bytes | None = None,
        speed: float | None = None,
        in_flight: int = 1,
        deadline_s: float = 3600.0,
        reconnect_s: float = 60.0,
        on_reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.address, self.day, self.calls = address, day, list(calls)
        #: the calls' schema: raw bars, or a feature-file run's rows (``feed_files``)
        self.schema = self.calls[0].rows.schema if self.calls else protocol.FEED_SCHEMA
        self.headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        self.tls_root = tls_root
        self.interval = 0.0 if not speed else 60.0 / speed  # seconds between minutes at ``speed``x
        self.in_flight = max(1, in_flight)
        self.deadline_s, self.reconnect_s = deadline_s, reconnect_s
        self.on_reply = on_reply
        self.client_id = uuid.uuid4().hex
        self.answered: set[int] = set()
        self.sent: dict[int, float] = {}
        self.cond = threading.Condition()
        self.frames: list[pl.DataFrame] = []
        self.report = FeedReport(predictions.empty())
        self.send_error: Exception | None = None  # why the last sender stopped early

    def run(self) -> FeedReport:
        """Feed every call and read every reply, reconnecting as the protocol says; the report."""
        t0 = time.perf_counter()
        progress = time.monotonic()
        while True:
            answered = len(self.answered)
            try:
                if self._session():
                    break
            except fl.FlightUnauthenticatedError as exc:
                raise ServiceError(f"{self.address} refused the token: {_first_line(exc)}") from exc
            except (fl.FlightError, pa.ArrowException, OSError) as exc:
                message = _first_line(exc)
                if message.startswith(("busy", "bad ")):
                    raise ServiceError(f"{self.address} refused the feed: {message}") from exc
                self.report.refusals.append(message)
                if len(self.answered) > answered:
                    progress = time.monotonic()
                if time.monotonic() - progress > self.reconnect_s:
                    raise ServiceError(f"{self.address}: no progress for {self.reconnect_s:.0f} s: {message}") from exc
                time.sleep(min(protocol.retry_after(message, 200), 5.0))
        self.report.received = pl.concat(self.frames) if self.frames else _received(predictions.empty(), "", 0)
        self.report.seconds = time.perf_counter() - t0
        return self.report

    def _session(self) -> bool:
        """One connection: the hello, then send from where the server stands; True when every call is answered."""
        client = fl.FlightClient(self.address, tls_root_certs=self.tls_root)
        options = fl.FlightCallOptions(headers=self.headers, timeout=self.deadline_s)
        descriptor = fl.FlightDescriptor.for_command(protocol.feed_descriptor(self.day, self.client_id))
        writer, reader = client.do_exchange(descriptor, options)
        stop = threading.Event()
        try:
            self.send_error = None
            writer.begin(self.schema)
            hello = reader.read_chunk()
            self.report.connects += 1  # a connection the server took (a refusal comes instead of the hello)
            first = self._hello(protocol.decode(hello.app_metadata), protocol.reply_frame(hello.data))
            self.answered.update(c.seq for c in self.calls[:first])  # the server holds them
            if first == len(self.calls):
                return True  # nothing to send: closing the call ends it on the server too
            sender = threading.Thread(target=self._send, args=(writer, first, stop), daemon=True)
            sender.start()
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    break
                self._reply(protocol.decode(chunk.app_metadata), protocol.reply_frame(chunk.data))
            done = all(c.seq in self.answered for c in self.calls)
            if not done and self.send_error is not None:
                raise self.send_error
            return done
        finally:
            stop.set()
            with self.cond:
                self.cond.notify_all()
            _close(writer)
            client.close()

    def _hello(self, meta: dict[str, Any], snapshot: pl.DataFrame) -> int:
        """Take the server's outputs so far; the index of the first call to send."""
        self.report.replies.append(meta)
        held = dt.datetime.fromisoformat(meta["held"]) if meta.get("held") else None
        if held is not None:  # what the server holds up to ``held`` replaces what this client has
            have = protocol.final_outputs(pl.concat(self.frames)) if self.frames else predictions.empty()
            gone = have.filter(pl.col("ts") <= held).join(snapshot, on=["ts", "symbol"], how="anti")
            gone = gone.with_columns(pl.lit(None, pl.Float32).alias(n) for n in OUTPUT_NAMES)
            self.frames.append(_received(pl.concat([gone, snapshot]), protocol.HELLO, len(self.report.replies)))
        if meta.get("seq") is not None:
            return next((i for i, c in enumerate(self.calls) if c.seq > meta["seq"]), len(self.calls))
        if held is None:
            return 0
        return next((i for i, c in enumerate(self.calls) if c.close > held), len(self.calls))

    def _send(self, writer: Any, first: int, stop: threading.Event) -> None:
        """Send calls ``first..`` at the pace, at most ``in_flight`` unanswered, then end the stream."""
        try:
            start = time.monotonic()
            for n, call in enumerate(self.calls[first:]):
                with self.cond:
                    while not stop.is_set() and self._unanswered(call.seq) >= self.in_flight:
                        self.cond.wait(0.5)
                if stop.is_set():
                    return
                delay = start + n * self.interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                batches = call.rows.to_batches()  # one: ``plan`` combined its chunks
                body = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=self.schema)
                self.sent[call.seq] = time.perf_counter()
                writer.write_with_metadata(body, protocol.call_metadata(call.minute, call.seq))
            writer.done_writing()
        except (fl.FlightError, pa.ArrowException, OSError) as exc:
            self.send_error = exc  # the reading side sees the same broken stream and reconnects

    def _unanswered(self, seq: int) -> int:
        return sum(1 for s in self.sent if s < seq and s not in self.answered)

    def _reply(self, meta: dict[str, Any], frame: pl.DataFrame) -> None:
        now = time.perf_counter()
        self.report.replies.append(meta)
        if frame.height:
            self.frames.append(_received(frame, meta.get("kind", ""), len(self.report.replies)))
        with self.cond:
            for seq in meta.get("seqs", []):
                if seq not in self.answered and seq in self.sent:
                    self.report.round_trip_ms[seq] = (now - self.sent[seq]) * 1e3
                    self.report.server_ms[seq] = float(meta.get("server_ms", 0.0)) + float(meta.get("queue_ms", 0.0))
                self.answered.add(seq)
            self.cond.notify_all()
        if self.on_reply is not None:
            self.on_reply(meta)


def _received(frame: pl.DataFrame, kind: str, reply: int) -> pl.DataFrame:
    return frame.select(predictions.COLUMNS).with_columns(
        pl.lit(kind, pl.String).alias("kind"), pl.lit(reply, pl.Int64).alias("reply")
    )


def _close(writer: Any) -> None:
    """Close the stream, quietly when it is broken already (its error was handled where it was read)."""
    with contextlib.suppress(fl.FlightError, pa.ArrowException, OSError):
        writer.close()


def _first_line(exc: BaseException) -> str:
    """A Flight error's message without gRPC's detail lines."""
    text = str(exc).split(". Detail:")[0].strip()
    return text.splitlines()[0] if text else type(exc).__name__

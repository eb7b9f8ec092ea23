"""What travels between ``tthf-serve`` and its clients (docs/serving.md, "The protocol").

A feeding client opens ``DoExchange`` with the descriptor ``feed_descriptor(day, client)``
and sends raw-schema record batches, each with JSON metadata ``{"minute", "seq", "final"}``:
the batches of one ``seq`` up to the one marked ``final`` are one call of the predictor,
closing ``minute`` (rows of earlier minutes in it are late rows or corrections). The server
answers first with a ``hello`` (the day, the last minute it holds, the last ``seq`` it
accepted from this client, and the day's outputs so far), then for each call with one
``minute`` message per minute it closed and a ``revision`` message when earlier minutes
changed (``ack`` when neither). Every reply is a record batch of the predictions-file schema
(``REPLY_SCHEMA``) with JSON metadata (``Reply``'s fields). ``DoGet`` with ``ticket(LATEST)``
gives the latest minute; ``ticket(STREAM)`` every reply from then on.

Refusals are Flight errors whose message starts with a word a client can act on:
``retry`` (overloaded, not ready, shutting down: reconnect after ``retry_after_ms``),
``busy`` (another client feeds this day), ``token`` (wrong or missing bearer token).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import polars as pl
import pyarrow as pa

from tthf.engine import predictions
from tthf.engine.config import OUTPUT_NAMES
from tthf.engine.data import marketdata
from tthf.engine.predictions import final_outputs as final_outputs  # the clients' name for it

LATEST, STREAM = "latest", "stream"
#: reply kinds: the first message of a feed, a closed minute, revised minutes, a call that closed nothing new
HELLO, MINUTE, REVISION, ACK = "hello", "minute", "revision", "ack"
#: the predictions file's columns as Arrow types: what every reply batch holds
REPLY_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("us", "UTC")),
        pa.field("symbol", pa.string()),
        *[pa.field(name, pa.float32()) for name in OUTPUT_NAMES],
        pa.field("source_ts", pa.timestamp("us", "UTC")),
    ]
)
#: what a feeding client sends: the raw schema, every column nullable (the cleaning counts the nulls)
FEED_SCHEMA = marketdata.conform(marketdata.ARROW_SCHEMA.empty_table(), "the feed").schema
_RETRY = re.compile(r"retry_after_ms=(\d+)")


def feed_descriptor(day: dt.date, client: str) -> bytes:
    """The ``DoExchange`` command of a feeding client: the day it feeds and its id (one per process)."""
    return json.dumps({"day": day.isoformat(), "client": client}).encode()


def parse_feed(command: bytes) -> tuple[dt.date, str]:
    """``feed_descriptor``'s day and client; ValueError when it is not one."""
    body = json.loads(command)
    return dt.date.fromisoformat(body["day"]), str(body["client"])


def ticket(what: str) -> bytes:
    return json.dumps({"what": what}).encode()


def call_metadata(minute: dt.datetime, seq: int, *, final: bool = True) -> bytes:
    """A feeding client's batch header: the minute its call closes, the call's number, the call's last batch."""
    return json.dumps({"minute": minute.isoformat(), "seq": seq, "final": final}).encode()


def parse_call(raw: bytes | None) -> tuple[dt.datetime, int, bool]:
    """``call_metadata``'s minute (UTC), seq and final flag; ValueError on anything else."""
    if raw is None:
        raise ValueError("a feed batch without metadata; send {minute, seq, final} with each batch")
    body = json.loads(bytes(raw))
    minute = dt.datetime.fromisoformat(body["minute"])
    if minute.tzinfo is None:
        raise ValueError(f"minute {body['minute']!r} has no time zone; send an ISO time with its offset")
    return minute.astimezone(dt.timezone.utc), int(body["seq"]), bool(body.get("final", True))


def encode(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, default=_json_default, separators=(",", ":")).encode()


def decode(raw: Any) -> dict[str, Any]:
    return json.loads(bytes(raw)) if raw is not None else {}


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def reply_batch(frame: pl.DataFrame) -> pa.RecordBatch:
    """A predictions frame as one record batch of ``REPLY_SCHEMA`` (an empty one when it has no rows)."""
    table = frame.select(predictions.COLUMNS).to_arrow().cast(REPLY_SCHEMA).combine_chunks()
    batches = table.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=REPLY_SCHEMA)


def reply_frame(batch: pa.RecordBatch | None) -> pl.DataFrame:
    """A reply batch as a predictions frame."""
    if batch is None or batch.num_rows == 0:
        return predictions.empty()
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    return frame.cast(predictions.SCHEMA)  # type: ignore[arg-type]


def retry_after(message: str, default_ms: int = 500) -> float:
    """Seconds to wait before retrying, from a ``retry`` refusal's message."""
    found = _RETRY.search(message)
    return (int(found.group(1)) if found else default_ms) / 1000

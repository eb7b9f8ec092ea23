"""The Arrow Flight face of the service: ``DoExchange`` for the feeding client, ``DoGet`` for subscribers.

A feed's handler thread writes the replies; a second thread reads the client's batches and
queues each call (the batches of one ``seq`` up to its ``final`` one) with the service. A
refusal (``service.Refused``) becomes a Flight error whose message starts with ``retry`` or
``busy`` (protocol); a wrong or missing bearer token is ``FlightUnauthenticatedError``.
"""

from __future__ import annotations

import hmac
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.flight as fl

from tthf.engine.serving import protocol
from tthf.engine.serving.service import Outbox, Refused, Reply, Service
from tthf.errors import ServiceError

log = logging.getLogger("tthf.serve")

#: seconds a handler waits for a reply before it looks again at its connection and the stop flag
POLL = 0.2


class BearerAuth(fl.ServerMiddlewareFactory):
    """Every call must carry ``authorization: Bearer <token>`` (compared in constant time; never logged)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._expected = f"Bearer {token}".encode()

    def start_call(self, info: Any, headers: dict[str, list[str]]) -> None:
        sent = headers.get("authorization", [])
        if not any(hmac.compare_digest(value.encode(), self._expected) for value in sent):
            raise fl.FlightUnauthenticatedError("token: missing or wrong bearer token (authorization header)")


class FlightService(fl.FlightServerBase):
    """``tthf-serve``'s Flight server over a ``Service``."""

    def __init__(
        self,
        service: Service,
        location: str,
        *,
        token: str | None = None,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        middleware = {"auth": BearerAuth(token)} if token else None
        super().__init__(location, tls_certificates=[tls] if tls else None, middleware=middleware)
        self.service = service

    def do_exchange(self, context: Any, descriptor: fl.FlightDescriptor, reader: Any, writer: Any) -> None:
        try:
            day, client = protocol.parse_feed(descriptor.command)
        except (ValueError, KeyError, TypeError) as exc:
            raise fl.FlightServerError(
                f"bad feed descriptor ({exc}); use protocol.feed_descriptor(day, client)"
            ) from exc
        box = _flight_error(lambda: self.service.connect_feeder(day, client))
        log.info("feeder %s connected for %s", client[:8], day)
        pump = threading.Thread(target=self._read, args=(reader, box), name="tthf-serve-feed", daemon=True)
        writer.begin(protocol.REPLY_SCHEMA)
        pump.start()
        try:
            self._write(context, writer, box)
        finally:
            self.service.release(box)
            box.input_done.set()
            log.info("feeder %s gone", client[:8])

    def _read(self, reader: Any, box: Outbox) -> None:
        """Queue each call the client sends; stop at its end, at an error, or at a refusal (told to the writer)."""
        parts: list[pa.RecordBatch] = []
        try:
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    return
                minute, seq, final = protocol.parse_call(chunk.app_metadata)
                if chunk.data is not None and chunk.data.num_rows:
                    parts.append(chunk.data)
                if final:
                    # as the client sent them: the predictor's update checks the schema (raw, or the
                    # feature schema of a run that reads feature files) and rejects rows, never the call
                    rows = pa.Table.from_batches(parts, schema=reader.schema)
                    self.service.submit(box, rows, minute, seq)
                    parts = []
        except Refused as exc:
            box.put(exc)
        except (ValueError, KeyError, TypeError, ServiceError) as exc:
            box.put(Refused(f"bad batch: {exc}", retry=False))
        except fl.FlightError:
            pass  # the client went away: what it had sent is queued, the rest it resends
        finally:
            box.input_done.set()

    def _write(self, context: Any, writer: Any, box: Outbox) -> None:
        while not (box.finished() and box.queue.empty()):
            if context.is_cancelled():
                return
            try:
                item = box.queue.get(timeout=POLL)
            except queue.Empty:
                continue
            if item is None:
                return
            if isinstance(item, ServiceError):
                _raise(item)
            writer.write_with_metadata(protocol.reply_batch(item.frame), protocol.encode(_meta(item)))

    def do_get(self, context: Any, ticket: fl.Ticket) -> fl.FlightDataStream:
        what = protocol.decode(ticket.ticket).get("what")
        if what == protocol.LATEST:
            latest = self.service.latest
            return fl.GeneratorStream(protocol.REPLY_SCHEMA, iter([_message(latest)]))
        if what == protocol.STREAM:
            return fl.GeneratorStream(protocol.REPLY_SCHEMA, self._stream(context))
        raise fl.FlightServerError(f"unknown ticket {what!r}: use protocol.ticket('latest') or ticket('stream')")

    def _stream(self, context: Any) -> Iterator[tuple[pa.RecordBatch, bytes]]:
        box = self.service.subscribe()
        try:
            while not context.is_cancelled():
                try:
                    item = box.queue.get(timeout=POLL)
                except queue.Empty:
                    if self.service.stopping.is_set():
                        return
                    continue
                if item is None:
                    return
                if isinstance(item, ServiceError):
                    _raise(item)
                yield _message(item)
        finally:
            self.service.unsubscribe(box)


def _meta(reply: Reply) -> dict[str, Any]:
    return {"kind": reply.kind, **reply.meta}


def _message(reply: Reply) -> tuple[pa.RecordBatch, bytes]:
    return protocol.reply_batch(reply.frame), protocol.encode(_meta(reply))


def _raise(exc: ServiceError) -> NoReturn:
    retry = isinstance(exc, Refused) and exc.retry
    raise (fl.FlightUnavailableError if retry else fl.FlightServerError)(str(exc))


def _flight_error(connect: Any) -> Outbox:
    try:
        return connect()
    except ServiceError as exc:
        _raise(exc)

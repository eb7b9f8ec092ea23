"""The real-time day journal: every accepted batch of a day, durable before ``update`` returns.

One Arrow IPC stream file per trading day (``<dir>/<day>.arrows``): each record batch is
the rows one ``RealtimePredictor.update`` accepted, in the raw schema, with the minute the
call closed in the batch's metadata (``close``: µs since the epoch; a close without rows is
a batch without rows). Each batch is flushed and fsync'd before ``append`` returns, so a
process killed at any point loses at most the call that had not returned. Reading keeps
the batches written in full and drops a torn tail (the batch being written at the kill);
reopening rewrites that prefix to a new file (one batch, marked ``held``: a second restart
replays it whole) and renames it over the old one, so the file is always one valid stream
that this process goes on appending to.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import BinaryIO, NamedTuple

import pyarrow as pa

_CLOSE = b"close"
_HELD = b"held"  # the batch a reopening wrote: the prefix held then, replayed whole


class Replay(NamedTuple):
    """What a restart replays: the accepted rows in arrival order and the last minute closed (µs; None: none).

    That is the journal up to the call that closed its last minute, not that call nor any
    after it: their rows come again when the caller resends, and are processed as the first
    time (a late row's revisions, lost with the process, are made again).
    """

    rows: pa.Table
    close_us: int | None


def journal_path(folder: str | os.PathLike[str], day: dt.date) -> Path:
    return Path(folder) / f"{day.isoformat()}.arrows"


def read_journal(path: Path, schema: pa.Schema) -> Replay:
    """What ``path`` holds to replay (see ``Replay``); a torn last batch is dropped; empty when there is no file."""
    batches: list[pa.RecordBatch] = []
    closes: list[int] = []  # the minute each batch's call had closed (-1: none yet)
    held = 0  # 1 when the first batch is the prefix a reopening held (not a call to resend)
    if path.exists() and path.stat().st_size:
        with pa.OSFile(str(path), "rb") as source:
            try:
                reader = pa.ipc.open_stream(source)
                while True:
                    batch, meta = reader.read_next_batch_with_custom_metadata()
                    batches.append(batch)
                    closes.append(int(meta[_CLOSE]) if meta is not None and _CLOSE in meta else -1)
                    held = held or int(len(batches) == 1 and meta is not None and _HELD in meta)
            except (StopIteration, pa.ArrowInvalid, OSError):
                pass  # the end, or the batch being written when the process died
    keep = max(closes.index(closes[-1]), held) if closes else 0  # the first call that closed the last minute
    table = pa.Table.from_batches(batches[:keep], schema) if keep else schema.empty_table()
    return Replay(table, closes[keep - 1] if keep and closes[keep - 1] >= 0 else None)


class DayJournal:
    """The open journal of one day: rewritten from what it held, then appended to batch by batch."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self._file: BinaryIO | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        #: the rows written so far and the last minute closed: the prefix a restart would replay (``Replay``)
        #: after this batch, the tag of the outputs published with it (outputlog.py)
        self.written: tuple[int, int | None] = (0, None)

    def open(self, held: Replay) -> None:
        """Start the file afresh with ``held`` (what the old file held in full), durably, then keep it open."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self.path.with_suffix(".arrows.tmp")
        self._file = open(fresh, "wb")  # noqa: SIM115 -- kept open for the day, closed by close()
        self._writer = pa.ipc.new_stream(self._file, self.schema)
        if held.rows.num_rows or held.close_us is not None:
            self.append(held.rows, held.close_us, held=True)
        else:
            self._sync()
        os.replace(fresh, self.path)
        _sync_folder(self.path.parent)

    def append(self, rows: pa.Table, close_us: int | None, *, held: bool = False) -> None:
        """Write ``rows`` (one batch) and the minute closed; on disk when this returns. ``held``: the
        prefix a reopening holds, replayed whole by the next restart too (none of its calls is resent)."""
        assert self._writer is not None, "open() the journal first"
        meta = {_CLOSE: str(close_us).encode()} if close_us is not None else {}
        meta |= {_HELD: b"1"} if held else {}
        batch = pa.RecordBatch.from_arrays(
            [rows.column(i).combine_chunks() for i in range(rows.num_columns)], schema=self.schema
        )
        self._writer.write_batch(batch, custom_metadata=meta or None)
        self._sync()
        self.written = (self.written[0] + batch.num_rows, close_us)

    def _sync(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """End the stream (a reader needs no end marker: a killed process leaves none)."""
        if self._writer is not None:
            self._writer.close()
            self._sync()
            assert self._file is not None
            self._file.close()
        self._writer = self._file = None


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

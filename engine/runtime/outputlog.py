"""The day's published outputs beside its journal: a restart restores them instead of predicting the day again.

One Arrow IPC stream file per trading day (``<dir>/<day>.outputs.arrows``) next to the
journal (journal.py). Each record batch is what one journaled call published -- its
predictions and revisions, a withdrawal as a row with null outputs -- and its metadata names
the journal prefix the call left behind (``tag``: the journal's rows so far and the last
minute closed, ``DayJournal.written``) and a CRC-32 of the batch. A restart that replays the
journal prefix (rows, close) restores the day's outputs from the batches up to the one with
that tag, each (ts, symbol)'s last version (``predictions.final_outputs``): what was
published, without predicting the closed minutes again (at 1000 symbols a day is 390,000
windows, most of a restart's time).

It is a cache of what the journal determines, never the record: written after the call's
journal batch, flushed but not fsync'd (a killed process keeps what it wrote; a machine that
loses power may lose the tail). When it cannot vouch for the prefix -- no file, no batch with
the tag, a torn or damaged batch before it (a CRC that does not match, an invalid array) --
``read_outputs`` returns None and the restart recomputes from the journal. Either way the
restart starts the file afresh with one batch of the outputs it holds, tagged with the prefix
(``OutputLog.open``), so the tags that follow go on from there.
"""

from __future__ import annotations

import datetime as dt
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pyarrow as pa

from tthf.engine import predictions

_ROWS, _CLOSE, _CRC = b"rows", b"close", b"crc"
#: the predictions schema as Arrow (what ``predictions.empty().to_arrow()`` has)
SCHEMA = predictions.empty().to_arrow().schema

#: a journal prefix: its rows and the last minute it closed (µs since the epoch; None: none)
Tag = tuple[int, int | None]


def outputs_path(folder: str | os.PathLike[str], day: dt.date) -> Path:
    return Path(folder) / f"{day.isoformat()}.outputs.arrows"


def read_outputs(path: Path, tag: Tag) -> pl.DataFrame | None:
    """The day's outputs after the journal prefix ``tag``; None when ``path`` cannot vouch for them (see above)."""
    batches: list[pa.RecordBatch] = []
    upto = None  # how many batches end with the one tagged ``tag``
    try:
        with pa.OSFile(str(path), "rb") as source:
            reader = pa.ipc.open_stream(source)
            while True:
                batch, meta = reader.read_next_batch_with_custom_metadata()
                batch.validate(full=True)
                if meta is None or meta.get(_CRC) != _crc(batch):
                    break  # damaged: nothing from here on is trusted
                batches.append(batch)
                if _tag(meta) == tag:
                    upto = len(batches)
    except (StopIteration, pa.ArrowException, OSError, ValueError, KeyError):
        pass  # the end, a torn tail, no file, a damaged header
    if upto is None:
        return None
    frame = pl.from_arrow(pa.Table.from_batches(batches[:upto], SCHEMA))
    assert isinstance(frame, pl.DataFrame)
    return predictions.final_outputs(frame.cast(predictions.SCHEMA))  # type: ignore[arg-type]


class OutputLog:
    """The open outputs file of one day: started afresh with the outputs a restart holds, then appended to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.tag: Tag | None = None  # the prefix of the last batch written

    def open(self, outputs: pl.DataFrame, tag: Tag) -> None:
        """Start the file with ``outputs`` (the day's after prefix ``tag``), renamed over the old one, then keep it open."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self.path.with_suffix(".arrows.tmp")
        self._file = open(fresh, "wb")  # noqa: SIM115 -- kept open for the day, closed by close()
        self._writer = pa.ipc.new_stream(self._file, SCHEMA)
        self.append(outputs, tag)
        os.replace(fresh, self.path)

    def append(self, published: pl.DataFrame, tag: Tag) -> None:
        """Write what a call published (one batch, nulls withdrawing) and the journal prefix after it; flushed."""
        assert self._writer is not None, "open() the outputs file first"
        table = published.select(predictions.COLUMNS).to_arrow().cast(SCHEMA)
        batch = pa.RecordBatch.from_arrays(
            [table.column(i).combine_chunks() for i in range(len(SCHEMA))], schema=SCHEMA
        )
        rows, close_us = tag
        meta = {_ROWS: str(rows).encode(), _CLOSE: str(-1 if close_us is None else close_us).encode()}
        self._writer.write_batch(batch, custom_metadata={**meta, _CRC: _crc(batch)})
        assert self._file is not None
        self._file.flush()
        self.tag = tag

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            assert self._file is not None
            self._file.close()
        self._writer = self._file = None


def _crc(batch: pa.RecordBatch) -> bytes:
    return str(zlib.crc32(batch.serialize())).encode()


def _tag(meta: pa.KeyValueMetadata) -> Tag:
    close = int(meta[_CLOSE])
    return int(meta[_ROWS]), None if close < 0 else close

"""A process that feeds one day to a journaled ``RealtimePredictor``, for the kill -9 test.

    python realtime_feeder.py STORE DATA JOURNAL OUT DAY RUN

It replays the journal (``reset``), then sends every call after the one that closed the
minute the journal holds: minute ``t``'s rows closing ``t``, and at ``WRONG_AT`` a wrong
version of one earlier row, corrected at ``RIGHT_AT`` (late data, revisions). Each call's
predictions and revisions go to OUT/RUN-t.parquet (written whole, then renamed), and after a
restart what the journal holds (``replayed``) to OUT/RUN--replay.parquet, as revisions.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import polars as pl

from tthf.engine import predictions
from tthf.engine.data.calendar import session_minutes
from tthf.engine.data.marketdata import read_day
from tthf.engine.runtime.realtime import RealtimePredictor

WRONG_AT, RIGHT_AT, CORRECTED = 150, 160, 140


def sends(raw: pl.DataFrame, minutes: list[dt.datetime]) -> list[pl.DataFrame]:
    """The rows of the call that closes each minute."""
    row = raw.filter(pl.col("ts") == minutes[CORRECTED]).head(1)
    out = []
    for t, minute in enumerate(minutes):
        rows = raw.filter((pl.col("ts") == minute) | ((pl.col("ts") < minute) if t == 0 else pl.lit(False)))
        if t == WRONG_AT:
            rows = pl.concat([rows, row.with_columns(pl.col("bid") * 0.98)])
        if t == RIGHT_AT:
            rows = pl.concat([rows, row])
        out.append(rows)
    return out


def main(store: str, data: str, journal: str, out: str, day_: str, run: str) -> None:
    day = dt.date.fromisoformat(day_)
    rt = RealtimePredictor.from_run(store, "jen", backend="torch", journal=journal)
    held = rt.reset(day)
    minutes = [m.astype("datetime64[us]").item().replace(tzinfo=dt.timezone.utc) for m in session_minutes(day)]
    calls = sends(read_day(data, day), minutes)
    first = 0 if held is None else minutes.index(held) + 1
    # what the journal holds is published again, as revisions: a reply computed before the kill
    # but never written is not lost ("-" sorts before this run's minute files)
    publish(Path(out) / f"{int(run):02d}--replay.parquet", predictions.empty(), rt.replayed())
    print("ready", first, flush=True)
    for t in range(first, len(minutes)):
        update = rt.update(calls[t], close=minutes[t])
        publish(Path(out) / f"{int(run):02d}-{t:03d}.parquet", update.predictions, update.revisions)


def publish(path: Path, new: pl.DataFrame, revised: pl.DataFrame) -> None:
    """One call's predictions and revisions, written whole, then renamed."""
    frame = pl.concat(
        [new.with_columns(pl.lit(False).alias("revision")), revised.with_columns(pl.lit(True).alias("revision"))]
    )
    frame.write_parquet(path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


if __name__ == "__main__":
    main(*sys.argv[1:7])

"""The service without a network: the wall clock closes today's minutes, a backlog is one predictor call."""

from __future__ import annotations

import datetime as dt
import queue
import time

import polars as pl
import pyarrow as pa
import pytest
from servers import Market

from tthf.engine.data.marketdata import read_day
from tthf.engine.runtime.realtime import RealtimePredictor
from tthf.engine.serving import protocol
from tthf.engine.serving.client import day_sends, plan
from tthf.engine.serving.service import Outbox, Reply, Service
from tthf.engine.testing import DAYS

DAY = DAYS[1]
OPEN = dt.datetime(2024, 1, 3, 14, 30, tzinfo=dt.timezone.utc)


@pytest.fixture
def service(market: Market, tmp_path) -> Service:  # type: ignore[no-untyped-def]
    now = OPEN + dt.timedelta(minutes=40, seconds=3)  # 40 minutes ended 3 s ago, the 41st is open
    rt = RealtimePredictor.from_run(str(market.store), "jen", backend="torch", journal=tmp_path)
    svc = Service(rt, queue_bound=16, grace=dt.timedelta(seconds=2), now=lambda: now)
    yield svc
    svc.stop(5)


def _replies(box: Outbox, n: int) -> list[Reply]:
    out = []
    for _ in range(n):
        item = box.queue.get(timeout=30)
        assert isinstance(item, Reply), item
        out.append(item)
    return out


def test_the_wall_clock_closes_todays_minutes_after_their_grace(service: Service, market: Market) -> None:
    assert service.start(DAY) is None and service.rt.clock is not None  # "today" is DAY for this clock
    box = service.connect_feeder(DAY, "c")
    assert _replies(box, 1)[0].kind == protocol.HELLO
    calls = plan(day_sends(read_day(str(market.data), DAY), DAY)[:41])  # up to the open minute
    rows = pl.concat([pl.from_arrow(c.rows) for c in calls])  # type: ignore[misc]
    service.submit(box, rows.to_arrow(), calls[34].minute, 0)  # the feeder closes minute 34 ...
    got = _replies(box, 40)  # ... and the clock 35..39, never the open minute 40
    assert [r.meta["minute"] for r in got] == [c.minute for c in calls[:40]]
    assert all(r.kind == protocol.MINUTE for r in got) and box.queue.empty()
    frames = pl.concat([r.frame for r in got])
    batch = market.batch(DAY)
    assert frames.equals(batch.filter(pl.col("ts") < calls[40].minute)) and frames.height
    assert got[0].meta["no_prediction"]["reason"].startswith("warm-up")


def test_a_backlog_is_predicted_in_one_call_and_nothing_is_skipped(service: Service, market: Market) -> None:
    service.grace = None  # no wall clock: only the feeder closes minutes
    service.start(DAY)
    box = service.connect_feeder(DAY, "c")
    _replies(box, 1)
    calls = plan(day_sends(read_day(str(market.data), DAY), DAY)[:15])  # within the bound (16)
    with service.work:  # the model is "busy": the calls queue up
        for call in calls:
            service.submit(box, call.rows, call.minute, call.seq)
    got = _replies(box, 15)
    assert [r.meta["minute"] for r in got] == [c.minute for c in calls]
    assert max(r.meta["batched"] for r in got) >= 14  # the first call maybe alone, the rest together
    assert pl.concat([r.frame for r in got]).equals(market.batch(DAY).filter(pl.col("ts") <= calls[-1].minute))
    with pytest.raises(queue.Empty):
        box.queue.get(timeout=0.5)


def test_a_full_queue_refuses_with_a_retry_status(service: Service, market: Market) -> None:
    service.grace = None
    service.start(DAY)
    box = service.connect_feeder(DAY, "c")
    calls = plan(day_sends(read_day(str(market.data), DAY), DAY)[:20])
    with service.work:
        with pytest.raises(Exception, match=r"^retry retry_after_ms=\d+: the input queue holds 16 calls"):
            for call in calls:
                service.submit(box, call.rows, call.minute, call.seq)
        assert service.queue.qsize() <= 16


def test_live_fails_while_the_loop_is_stuck_and_recovers(service: Service, market: Market) -> None:
    service.grace = None
    service.start(DAY)
    service.stall_s = 0.5
    box = service.connect_feeder(DAY, "c")
    call = plan(day_sends(read_day(str(market.data), DAY), DAY)[:1])[0]
    assert service.live()
    with service.work:  # the predictor call cannot start: the loop is stuck in it
        service.submit(box, call.rows, call.minute, call.seq)
        deadline = time.monotonic() + 10
        while service.live() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not service.live()
    _replies(box, 2)  # the hello, then the call's minute
    assert service.live()


def test_a_call_the_predictor_cannot_apply_is_answered_with_its_error_and_the_loop_goes_on(
    service: Service, market: Market
) -> None:
    service.grace = None
    service.start(DAY)
    box = service.connect_feeder(DAY, "c")
    _replies(box, 1)
    call = plan(day_sends(read_day(str(market.data), DAY), DAY)[:1])[0]
    service.submit(box, pa.table({"symbol": ["A"], "price": [1.0]}), call.minute, 0)  # not the raw schema
    error = _replies(box, 1)[0]
    assert error.kind == protocol.ACK and "ts" in error.meta["error"] and error.meta["seqs"] == [0]
    service.submit(box, call.rows, call.minute, 1)
    assert _replies(box, 1)[0].meta["minute"] == call.minute

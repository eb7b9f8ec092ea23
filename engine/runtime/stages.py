"""Overlapping stages over a stream of work items (dates), with bounded queues.

Each stage runs in its own thread and hands its result to the next through a queue of
``depth`` slots, so at most ``stages * (depth + 1)`` items are alive at once whatever the
number of dates, and the wall time approaches the slowest stage instead of the sum.
Threads, not processes: every heavy stage (parquet decoding, polars, the C++ window
kernel, torch / ONNX Runtime / TensorRT) releases the GIL, and a thread hands a day's
feature grid to the next stage without pickling it (docs/running.md has the measurements).

Items come out in input order. An exception in a stage is stored on the item, its
later stages are skipped, and the consumer decides whether it is fatal. ``overlap=False``
runs the same stages one after another in the caller's thread (to measure the gain).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

#: a stage: its name and ``fn(key, payload) -> payload`` (the first stage gets ``None``)
Stage = tuple[str, Callable[[Any, Any], Any]]

_END = object()
_POLL_S = 0.1
#: how long a stopped pipeline waits for its threads in all (they are daemons)
_JOIN_S = 2.0


@dataclass
class Item:
    """One work item on its way through the stages."""

    key: Any
    payload: Any = None
    seconds: dict[str, float] = field(default_factory=dict)  # busy time per stage
    error: BaseException | None = None
    failed_in: str = ""


def _apply(stage: Stage, item: Item) -> None:
    name, fn = stage
    if item.error is not None:
        return
    t0 = time.perf_counter()
    try:
        item.payload = fn(item.key, item.payload)
    except Exception as exc:
        item.error, item.failed_in, item.payload = exc, name, None
    item.seconds[name] = time.perf_counter() - t0


class Pipeline:
    """``run(keys)`` yields one finished ``Item`` per key, in order."""

    def __init__(self, stages: Sequence[Stage], *, overlap: bool = True, depth: int = 1) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.stages = list(stages)
        self.overlap = overlap
        self.depth = depth

    def run(self, keys: Iterable[Any]) -> Generator[Item, None, None]:
        if not self.overlap:
            for key in keys:
                item = Item(key)
                for stage in self.stages:
                    _apply(stage, item)
                yield item
            return
        yield from self._run_threads(keys)

    def _run_threads(self, keys: Iterable[Any]) -> Iterator[Item]:
        stop = threading.Event()
        queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=self.depth) for _ in range(len(self.stages) + 1)]

        def put(q: queue.Queue, obj: object) -> bool:
            while not stop.is_set():
                try:
                    q.put(obj, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def get(q: queue.Queue) -> object:
            while not stop.is_set():
                try:
                    return q.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
            return _END

        def feed() -> None:
            for key in keys:
                if not put(queues[0], Item(key)):
                    return
            put(queues[0], _END)

        def work(stage: Stage, inbox: queue.Queue, outbox: queue.Queue) -> None:
            while True:
                item = get(inbox)
                if item is _END:
                    put(outbox, _END)
                    return
                assert isinstance(item, Item)
                _apply(stage, item)
                if not put(outbox, item):
                    return

        threads = [threading.Thread(target=feed, name="tthf-feed", daemon=True)]
        threads += [
            threading.Thread(target=work, args=(stage, queues[i], queues[i + 1]), name=f"tthf-{stage[0]}", daemon=True)
            for i, stage in enumerate(self.stages)
        ]
        for thread in threads:
            thread.start()
        try:
            while True:
                item = get(queues[-1])
                if item is _END:
                    return
                assert isinstance(item, Item)
                yield item
        finally:
            # consumer done, stopped early (fail-fast, an error) or interrupted: let the threads exit
            stop.set()
            deadline = time.monotonic() + _JOIN_S
            for thread in threads:  # a stage busy with a long day finishes it in the background
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

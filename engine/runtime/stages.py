"""Overlapping stages over a stream of work items (dates), with bounded queues.

Each stage runs in its own thread and hands its result to the next through a queue of
``depth`` slots, so the wall time approaches the slowest stage instead of the sum. A
stage given ``workers > 1`` runs that many threads on successive items at once and a
reorder buffer hands them on in input order; it holds at most ``workers + depth`` items,
so memory stays bounded whatever the number of dates. A stage whose work must leave the
process (the GIL-bound features, docs/running.md) keeps its threads and has each one wait
on a process pool: the pipeline itself never pickles. Such a stage returns ``Measured``: the
parts of its time measured where the work ran are recorded under their own names, and the
rest (the hand-over) under the name it gives.

Items come out in input order. An exception in a stage is stored on the item, its
later stages are skipped, and the consumer decides whether it is fatal. ``overlap=False``
runs the same stages one after another in the caller's thread (to measure the gain).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: a stage: its name and ``fn(key, payload) -> payload`` or ``Measured`` (the first stage gets ``None``)
Stage = tuple[str, Callable[[Any, Any], Any]]

_END = object()
_POLL_S = 0.1
#: how long a stopped pipeline waits for its threads in all (they are daemons)
_JOIN_S = 2.0


@dataclass
class Item:
    """One work item on its way through the stages."""

    key: Any
    seq: int = 0  # position in the input, for the reorder buffers
    payload: Any = None
    seconds: dict[str, float] = field(default_factory=dict)  # busy time per stage
    error: BaseException | None = None
    failed_in: str = ""


@dataclass
class Measured:
    """A stage's payload with the stage's time split: ``seconds`` as measured where its work ran, the rest as ``rest``."""

    payload: Any
    seconds: dict[str, float]
    rest: str


def _apply(stage: Stage, item: Item) -> None:
    name, fn = stage
    if item.error is not None:
        return
    t0 = time.perf_counter()
    try:
        out = fn(item.key, item.payload)
    except Exception as exc:
        item.error, item.failed_in, item.payload = exc, name, None
        item.seconds[name] = time.perf_counter() - t0
        return
    elapsed = time.perf_counter() - t0
    if isinstance(out, Measured):
        item.seconds.update(out.seconds)
        name, elapsed, out = out.rest, max(0.0, elapsed - sum(out.seconds.values())), out.payload
    item.payload = out
    item.seconds[name] = elapsed


class Pipeline:
    """``run(keys)`` yields one finished ``Item`` per key, in order."""

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        overlap: bool = True,
        depth: int = 1,
        workers: Mapping[str, int] | None = None,
    ) -> None:
        """``workers`` maps a stage's name to its number of threads (default 1 each)."""
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        names = [name for name, _ in stages]
        workers = dict(workers or {})
        unknown = sorted(set(workers) - set(names))
        if unknown:
            raise ValueError(f"workers given for unknown stages {unknown}; the stages are {names}")
        bad = {name: n for name, n in workers.items() if n < 1}
        if bad:
            raise ValueError(f"workers must be >= 1, got {bad}")
        self.stages = list(stages)
        self.overlap = overlap
        self.depth = depth
        self.workers = [workers.get(name, 1) for name in names]

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
        put, get = _mover(stop)

        def feed() -> None:
            for seq, key in enumerate(keys):
                if not put(queues[0], Item(key, seq)):
                    return
            put(queues[0], _END)

        threads = [threading.Thread(target=feed, name="tthf-feed", daemon=True)]
        for i, (stage, n) in enumerate(zip(self.stages, self.workers)):
            threads += _stage_threads(stage, n, self.depth, queues[i], queues[i + 1], stop)
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


def _mover(stop: threading.Event) -> tuple[Callable[[queue.Queue, object], bool], Callable[[queue.Queue], object]]:
    """``put`` and ``get`` on the bounded queues that give up once ``stop`` is set."""

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

    return put, get


def _stage_threads(
    stage: Stage, workers: int, depth: int, inbox: queue.Queue, outbox: queue.Queue, stop: threading.Event
) -> list[threading.Thread]:
    """The threads of one stage: one that works in order, or ``workers`` behind a reorder buffer."""
    put, get = _mover(stop)
    name = stage[0]

    def single() -> None:
        while True:
            item = get(inbox)
            if item is _END:
                put(outbox, _END)
                return
            assert isinstance(item, Item)
            _apply(stage, item)
            if not put(outbox, item):
                return

    if workers == 1:
        return [threading.Thread(target=single, name=f"tthf-{name}", daemon=True)]

    buffer = _Reorder(workers + depth, stop)

    def work() -> None:
        while buffer.admit():
            item = get(inbox)
            if item is _END:
                put(inbox, _END)  # for the other workers
                buffer.done(_END)
                return
            assert isinstance(item, Item)
            _apply(stage, item)
            buffer.done(item)

    def emit() -> None:
        ends = 0
        while ends < workers:
            item = buffer.next()
            if item is None:
                return
            if item is _END:
                ends += 1
                continue
            if not put(outbox, item):
                return
        put(outbox, _END)

    threads = [threading.Thread(target=work, name=f"tthf-{name}-{k}", daemon=True) for k in range(workers)]
    return [*threads, threading.Thread(target=emit, name=f"tthf-{name}-order", daemon=True)]


class _Reorder:
    """The items of a many-worker stage, handed on in input order; at most ``capacity`` held.

    A worker takes a slot (``admit``) before it takes an item from the inbox and the slot is
    freed when the item leaves in order, so the stage holds at most ``capacity`` items
    (being worked on or waiting for an earlier one). The inbox is FIFO, so the next item in
    order is always held by a worker or in the buffer: the wait for it cannot deadlock.
    """

    def __init__(self, capacity: int, stop: threading.Event) -> None:
        self.slots = threading.Semaphore(capacity)
        self.cond = threading.Condition()
        self.stop = stop
        self.ready: dict[int, Item] = {}
        self.ends = 0
        self.next_seq = 0

    def admit(self) -> bool:
        while not self.stop.is_set():
            if self.slots.acquire(timeout=_POLL_S):
                return True
        return False

    def done(self, item: Item | object) -> None:
        with self.cond:
            if isinstance(item, Item):
                self.ready[item.seq] = item
            else:
                self.ends += 1
            self.cond.notify_all()

    def next(self) -> Item | object | None:
        """The next item in order, ``_END`` once per finished worker, or None when stopped."""
        with self.cond:
            while not self.stop.is_set():
                if self.next_seq in self.ready:
                    self.next_seq += 1
                    self.slots.release()
                    return self.ready.pop(self.next_seq - 1)
                if self.ends:  # a worker saw the end and left; the emitter counts them
                    self.ends -= 1
                    self.slots.release()
                    return _END
                self.cond.wait(timeout=_POLL_S)
        return None

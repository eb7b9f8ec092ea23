"""The stage pipeline: order, errors, bounded memory, real overlap; tthf-run with and without it."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from tthf.cli.run import main
from tthf.engine.runtime.stages import Measured, Pipeline
from tthf.engine.testing import make_data, make_run

INFERENCE = Path("demo/three_headed_transformer/jennifer/inference")


def _sleepy(name: str, seconds: float, log: list | None = None):
    def fn(key: int, payload: list | None) -> list:
        time.sleep(seconds)
        if log is not None:
            log.append((name, key))
        return [*(payload or []), name]

    return (name, fn)


@pytest.mark.parametrize("overlap", [True, False])
def test_items_come_out_in_order_through_every_stage(overlap: bool) -> None:
    pipe = Pipeline([_sleepy("a", 0.001), _sleepy("b", 0.003), _sleepy("c", 0.0)], overlap=overlap)
    items = list(pipe.run(range(20)))
    assert [i.key for i in items] == list(range(20))
    assert all(i.payload == ["a", "b", "c"] and set(i.seconds) == {"a", "b", "c"} for i in items)


@pytest.mark.parametrize("overlap", [True, False])
def test_an_error_skips_the_later_stages_of_that_item_only(overlap: bool) -> None:
    def boom(key: int, payload: list) -> list:
        if key == 2:
            raise ValueError("bad item")
        return payload

    items = list(Pipeline([_sleepy("a", 0), ("boom", boom), _sleepy("c", 0)], overlap=overlap).run(range(5)))
    assert [i.error is None for i in items] == [True, True, False, True, True]
    assert items[2].failed_in == "boom" and "c" not in items[2].seconds and str(items[2].error) == "bad item"
    assert items[3].payload == ["a", "c"]


@pytest.mark.parametrize("overlap", [True, False])
def test_a_stage_measured_elsewhere_records_its_parts_and_the_rest_under_the_name_it_gives(overlap: bool) -> None:
    def remote(key: int, payload: list) -> Measured:
        time.sleep(0.05)  # 0.03 s of it "in a worker", the rest is the hand-over
        return Measured([*payload, "remote"], {"work": 0.03, "more": 0.01}, rest="hand-over")

    items = list(Pipeline([_sleepy("a", 0), ("remote", remote)], overlap=overlap).run(range(3)))
    for item in items:
        assert item.payload == ["a", "remote"] and list(item.seconds) == ["a", "work", "more", "hand-over"]
        assert item.seconds["work"] == 0.03 and 0.01 <= item.seconds["hand-over"] < 0.5
    too_much = Pipeline([("remote", lambda key, _: Measured(key, {"work": 60.0}, rest="hand-over"))]).run([1])
    assert next(too_much).seconds == {"work": 60.0, "hand-over": 0.0}  # another clock: never a negative rest


def test_overlap_approaches_the_slowest_stage() -> None:
    stages = [_sleepy("read", 0.04), _sleepy("compute", 0.06), _sleepy("write", 0.04)]
    t0 = time.perf_counter()
    list(Pipeline(stages, overlap=False).run(range(8)))
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(Pipeline(stages, overlap=True).run(range(8)))
    overlapped = time.perf_counter() - t0
    assert sequential >= 8 * 0.14
    # ideal: 8 * 0.06 + 0.08 = 0.56 s; sleeping threads leave room for a loaded machine
    assert overlapped < 0.75 * sequential


def test_items_in_flight_stay_bounded_and_stopping_early_ends_the_threads() -> None:
    alive, peak, lock = [0], [0], threading.Lock()

    def enter(key: int, _: None) -> int:
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        return key

    def slow_exit(key: int, payload: int) -> int:
        time.sleep(0.01)
        with lock:
            alive[0] -= 1
        return payload

    pipe = Pipeline([("enter", enter), ("mid", lambda key, payload: payload), ("exit", slow_exit)], depth=1)
    before = threading.active_count()
    for item in pipe.run(range(1000)):
        assert item.error is None
        if item.key == 30:
            break
    assert peak[0] <= 3 * 2 + 1  # stages * (depth + 1) + the one being handed over
    time.sleep(0.3)
    assert threading.active_count() <= before


def test_no_overlap_writes_the_same_bytes(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", n_symbols=3)
    make_run(str(tmp_path / "runs"), data)
    shutil.copytree(tmp_path / "runs", tmp_path / "runs2")
    args = ["--run", "jen", "--dates", "2024-01", "--data", str(data), "--dense", "--format", "parquet"]
    assert main([*args, "--store", str(tmp_path / "runs")]) == 0
    assert main([*args, "--store", str(tmp_path / "runs2"), "--no-overlap"]) == 0
    for a in sorted((tmp_path / "runs" / INFERENCE).glob("*.parquet")):
        assert a.read_bytes() == (tmp_path / "runs2" / INFERENCE / a.name).read_bytes()


def _jittery(name: str, seed: int, log: list | None = None):
    """A stage that sleeps a random 0-8 ms per item, so many workers finish out of order."""
    import random

    rng = random.Random(seed)
    delays = [rng.uniform(0, 0.008) for _ in range(1000)]

    def fn(key: int, payload: list | None) -> list:
        time.sleep(delays[key])
        if log is not None:
            log.append(key)
        return [*(payload or []), name]

    return (name, fn)


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_many_workers_hand_items_on_in_order(workers: int) -> None:
    finished: list[int] = []
    stages = [_jittery("a", 1, finished), _sleepy("b", 0.001), _jittery("c", 2)]
    items = list(Pipeline(stages, workers={"a": workers, "c": workers}).run(range(60)))
    assert [i.key for i in items] == list(range(60))
    assert all(i.payload == ["a", "b", "c"] and i.error is None for i in items)
    assert finished != sorted(finished)  # the workers really did finish out of order


def test_many_workers_run_items_at_once() -> None:
    stages = [_sleepy("slow", 0.05)]
    t0 = time.perf_counter()
    list(Pipeline(stages, workers={"slow": 4}).run(range(16)))
    assert time.perf_counter() - t0 < 0.6 * 16 * 0.05  # 4 at once: ideally 0.2 s of 0.8 s


def test_items_in_a_many_worker_stage_stay_bounded() -> None:
    alive, peak, lock = [0], [0], threading.Lock()

    def enter(key: int, _: None) -> int:
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        time.sleep(0.002 * (key % 3))
        return key

    def leave(key: int, payload: int) -> int:
        time.sleep(0.01)  # the slow consumer: items pile up unless the stage holds back
        with lock:
            alive[0] -= 1
        return payload

    before = threading.active_count()
    pipe = Pipeline([("enter", enter), ("leave", leave)], workers={"enter": 3}, depth=1)
    for item in pipe.run(range(200)):
        if item.key == 40:
            break
    # enter: 3 workers + 1 in its reorder buffer; its outbox 1; leave: 1 working + 1 in its outbox
    assert peak[0] <= (3 + 1) + 1 + 1 + 1 + 1
    time.sleep(0.4)
    assert threading.active_count() <= before


def test_an_error_in_a_many_worker_stage_stays_on_its_item() -> None:
    def boom(key: int, payload: list) -> list:
        time.sleep(0.001 * (7 - key % 7))
        if key % 5 == 2:
            raise ValueError(f"bad item {key}")
        return payload

    items = list(Pipeline([_sleepy("a", 0), ("boom", boom), _sleepy("c", 0)], workers={"boom": 3}).run(range(20)))
    assert [i.key for i in items] == list(range(20))
    bad = [i for i in items if i.error is not None]
    assert [i.key for i in bad] == [2, 7, 12, 17]
    assert all(i.failed_in == "boom" and str(i.error) == f"bad item {i.key}" and "c" not in i.seconds for i in bad)
    assert all(i.payload == ["a", "c"] for i in items if i.error is None)


def test_workers_must_name_a_stage_and_be_positive() -> None:
    with pytest.raises(ValueError, match="unknown stages"):
        Pipeline([_sleepy("a", 0)], workers={"b": 2})
    with pytest.raises(ValueError, match=">= 1"):
        Pipeline([_sleepy("a", 0)], workers={"a": 0})

"""bench/benchlib.py's interleaved rounds: every job once per round, back to back, and the per-round ratios."""

from __future__ import annotations

import pytest
from benchlib import Job, interleaved_round, round_ratios, rounds_summary


def test_a_round_runs_every_job_back_to_back_and_records_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    loads = iter([(1.5, 0, 0), (2.5, 0, 0), (3.0, 0, 0), (3.5, 0, 0)])
    monkeypatch.setattr("benchlib.os.getloadavg", lambda: next(loads))

    def job(name: str, windows: int) -> Job:
        def run() -> tuple[int, dict]:
            calls.append(name)
            return windows, {"backend": name, "stages": {"predict": 1.0}}

        return run

    jobs = {"fp32": job("fp32", 10), "int8": job("int8", 20)}
    rounds = [interleaved_round(jobs), interleaved_round(jobs)]
    assert calls == ["fp32", "int8", "fp32", "int8"]  # interleaved, not fp32 twice then int8 twice
    assert [r["load_average"] for r in rounds] == [[1.5, 2.5], [3.0, 3.5]]
    run = rounds[0]["runs"]["int8"]
    assert run["windows"] == 20 and run["backend"] == "int8" and run["stages"] == {"predict": 1.0}
    assert run["seconds"] > 0


def _rounds(*pairs: tuple[float, float]) -> list[dict]:
    """Rounds of fp32 and int8 at the given windows/s (100 windows each)."""
    return [
        {"load_average": [0.0, 0.0], "runs": {"fp32": {"windows": 100, "seconds": 100 / a}, "int8": {"windows": 100, "seconds": 100 / b}}}
        for a, b in pairs
    ]  # fmt: skip


def test_ratios_are_per_round_and_the_summary_is_best_against_best() -> None:
    rounds = _rounds((400.0, 800.0), (100.0, 700.0), (410.0, 600.0))  # fp32 loaded in round 1
    assert round_ratios(rounds, "int8", "fp32") == pytest.approx([2.0, 7.0, 600 / 410])
    s = rounds_summary(rounds, "fp32")
    assert s["int8"]["best"] == pytest.approx(800.0) and s["int8"]["median"] == pytest.approx(700.0)
    assert s["int8"]["vs_base"] == pytest.approx(800 / 410)  # not 7x: one loaded round does not make the ratio
    assert (s["int8"]["ratio_min"], s["int8"]["ratio_max"]) == pytest.approx((600 / 410, 7.0))
    assert s["fp32"]["vs_base"] == pytest.approx(1.0)

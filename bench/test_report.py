"""bench/report.py's targets table from a hand-made pytest-benchmark JSON: met, missed, and "not measured"."""

from __future__ import annotations

import report
from benchlib import CPU_PRECISIONS


def _bench(section: str, variant: str, seconds: float, units: float, **extra) -> dict:
    return {
        "group": section,
        "params": {},
        "stats": {"min": seconds},
        "extra_info": {"section": section, "variant": variant, "units": units, **extra},
    }


def _inference(model: str, variant: str, batch: int, rate: float, bar: str = "fp32", ok: bool = True) -> dict:
    accuracy = {
        "bar": bar,
        "validated": ok,
        "max_abs": dict.fromkeys(("ret_1h", "vol_10m", "ret_conf", "vol_conf"), 0.0),
    }
    flops = 1_000_000 if model == "default" else 50_000_000
    return _bench(
        "inference", variant, batch / rate, batch, batch=batch, flops_per_window=flops, accuracy=accuracy, model=model
    )


def _doc(benchmarks: list[dict]) -> dict:
    machine = {"tthf": {"symbols": 1000, "smoke": False}, "cpu": {"brand_raw": "test CPU"}}
    return {"datetime": "2026-01-01T00:00:00", "machine_info": machine, "benchmarks": benchmarks}


def _targets(benchmarks: list[dict]) -> dict[str, tuple[str, str]]:
    text = report.render(_doc(benchmarks))
    rows = text.split("## Targets", 1)[1].split("## Machine", 1)[0].strip().splitlines()[2:]
    return {
        cells[0]: (cells[2], cells[3]) for cells in ([c.strip() for c in r.strip().strip("|").split("|")] for r in rows)
    }


FULL = [
    _bench("matmul", "float32", 1.0, 100e9, n=2048),
    _inference("default", "torch-fp32", 1000, 10_000),
    _inference("default", "onnxruntime-fp32", 1000, 20_000),
    _inference("default", "openvino-fp32", 1000, 30_000),  # 3x: the best fp32
    _inference("default", "openvino-bf16", 1000, 50_000, bar="bf16", ok=False),  # fast but outside its bar
    _inference("production", "openvino-fp32", 1000, 1_500),  # 50e6 x 1500 / 100e9 = 75%
    _inference("production", "torch-fp32", 1000, 1_000),
    _bench("features", "tthf", 0.1, 1e6, symbols=500, core_seconds=0.05),  # 0.10 per 1000 symbols
    _bench("features", "baseline-pandas", 2.0, 1e6, symbols=500, core_seconds=1.0),  # 20x
    _bench(
        "host_stages",
        "workers",
        10.0,
        8,
        symbols=500,
        workers={"1": 0.3, "2": 0.5},  # 1.67x: missed
        core_seconds_per_day_by_workers={"1": 0.2, "2": 0.25},  # 0.40 core-s per 1000-symbol day
        processes={"2": 0.45},
        core_seconds_per_day_processes={"2": 0.3},
    ),
    _bench("end_to_end", "tthf-run-dense", 10.0, 1e6, backend="openvino", dates=2, stages={}),
    _bench("end_to_end", "baseline", 50.0, 1e6, backend="torch", dates=2, stages={}),  # 5x
    _bench(
        "realtime", "auto", 1.0, 1000, rounds=9, p50_ms=40.0, p95_ms=60.0, p99_ms=80.0, max_ms=90.0, stage_ms_median={}
    ),
]


def test_every_target_from_its_entries() -> None:
    got = _targets(FULL)
    assert got["best fp32 CPU backend vs torch eager, batch 1000"] == ("3.00x", "met")
    # openvino-bf16 is outside its bar: no validated bf16 path, so not measured rather than 5x
    assert got["validated bf16 path vs torch eager, batch 1000"] == ("not measured", "-")
    assert got["features, core-seconds per 1000-symbol day"] == ("0.10 core-s", "met")
    assert got["features vs pandas (core-seconds)"] == ("20.00x", "met")
    assert got["host stages, 2 workers vs 1 (dates/s)"] == ("1.67x", "**missed**")
    assert got["`tthf-run --dense` vs baseline, end to end"] == ("5.00x", "met")
    assert got["real-time p99, 1000 symbols"] == ("80 ms", "**missed**")
    assert got["production model, best backend % of matmul roofline, batch 1000"] == ("75.0%", "met")


def test_absent_measurements_say_so_and_invent_nothing() -> None:
    got = _targets(FULL[:4])
    assert got["best fp32 CPU backend vs torch eager, batch 1000"] == ("3.00x", "met")
    absent = [k for k in got if k != "best fp32 CPU backend vs torch eager, batch 1000"]
    assert len(absent) == 8 and all(got[k] == ("not measured", "-") for k in absent)


def test_fastest_per_batch_and_host_year() -> None:
    text = report.render(_doc(FULL))
    assert "| 1000 | openvino-fp32 | 30,000 | onnxruntime-fp32 | openvino-fp32 | 1.50x |" in text
    # 0.10 core-s per day x 252 days = 25.2 core-s a year
    assert "| features (bench_features, tthf) | 0.100 | 25.2 |" in text
    # 0.2 core-s per 500-symbol day = 0.40 per 1000 symbols, x 252 = 100.8
    assert "| host stages (read, features, scaling) | 0.400 | 100.8 |" in text
    assert "| 1 | this thread | 0.3 | 1.00x | 0.400 |" in text
    assert "| 2 | threads | 0.5 | 1.67x | 0.500 |" in text
    assert "| 2 | processes | 0.45 | 1.50x | 0.600 |" in text


def test_the_roofline_is_the_higher_of_the_stated_peak_and_the_measured_gemm() -> None:
    """The issue's '153.9% of matmul roofline': a torch GEMM slower than the model made the reference too low."""
    from benchlib import cpu_peaks
    from report import precision_of, roofline_reference

    peaks = cpu_peaks(2, {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "amx_int8"}, mhz=2000.0)
    assert peaks["fp32"]["flops"] == 2 * 64 * 2e9 and "avx512f" in peaks["fp32"]["formula"]
    assert peaks["int8"]["flops"] == 2 * 2048 * 2e9 and peaks["bf16"]["flops"] == 2 * 1024 * 2e9
    # torch's 194.9 GFLOP/s is below the stated 256: the stated peak is the reference
    assert roofline_reference("fp32", {"float32": 194.9e9}, peaks) == 256e9
    assert roofline_reference("fp32", {"float32": 300e9}, peaks) == 300e9  # a GEMM above the stated peak wins
    avx2 = cpu_peaks(2, {"avx2"}, mhz=2000.0)
    assert avx2["int8"]["flops"] is None and "avx512_vnni" in avx2["int8"]["why"]
    assert roofline_reference("int8", {}, avx2) is None
    assert [precision_of(v) for v in ("openvino-int8", "openvino-bf16", "openvino-fp32")] == ["int8", "bf16", "fp32"]


def test_the_explain_cost_is_reported_from_its_entry() -> None:
    entry = _bench(
        "explain",
        "default",
        30.0,
        2,
        symbols=1000,
        sampling="every 10th forecast minute, every symbol",
        seconds_per_date=14.5,
        windows_per_date=[36000, 36000],
        passes=96,
        backend="openvino (CPU)",
    )
    text = report.render(_doc([*FULL, entry]))
    assert "## Explanations (tthf-eval --explain)" in text
    assert "14.5 s per evaluated date: 1000 symbols, every 10th forecast minute" in text
    assert "## Explanations" not in report.render(_doc(FULL))


def _realtime(model: str, variant: str, p99: float, precision: str = "fp32") -> dict:
    return _bench(
        "realtime", variant, 1.0, 1000, rounds=9, p50_ms=p99 / 2, p95_ms=p99 * 0.9, p99_ms=p99, max_ms=p99 * 1.1,
        stage_ms_median={}, model=model, precision=precision,
    )  # fmt: skip


def _round(load: float, **rates: float) -> dict:
    """One interleaved round (``benchlib.interleaved_round``'s record): 100,000 windows per precision at ``rates``."""
    runs = {
        p: {"windows": 100_000, "seconds": 1e5 / r, "backend": CPU_PRECISIONS[p], "stages": {"predict": 0.99e5 / r}}
        for p, r in rates.items()
    }
    return {"load_average": [load, load + 0.5], "runs": runs}


def _e2e_rounds(*rounds: dict) -> dict:
    verdicts = {p: "accepted" for p in rounds[0]["runs"]}
    return _bench(
        "end_to_end", "tthf-run-dense-production", 1.0, 1e5 * len(rounds[0]["runs"]), model="production",
        interleaved=True, rounds=list(rounds), export_verdicts=verdicts, dates=1,
    )  # fmt: skip


#: three rounds; fp32 runs in a load spike in round 1, where int8 alone would read 4.38x
ROUNDS = [_round(2.0, fp32=4000, int8=7380), _round(6.0, fp32=1600, int8=7000), _round(5.0, fp32=4100, int8=6560)]


def test_precision_rows_end_to_end_and_real_time_and_what_this_cpu_lacks() -> None:
    """Issue 26: the production model per precision, from interleaved rounds (each row its best round, the
    ratio best against best with its range over the rounds); a precision without an instruction says so."""
    from benchlib import cpu_peaks

    realtime = [_realtime("production", "RealtimePredictor (openvino-int8)", 200.0, "int8"), FULL[-1]]
    doc = _doc([*FULL[:-1], _e2e_rounds(*ROUNDS), *realtime])
    doc["machine_info"]["tthf"]["cpu_peaks"] = cpu_peaks(2, {"avx2", "avx512f", "avx512_vnni"}, mhz=2000.0)
    text = report.render(doc)
    # each row is its precision's best round: fp32 round 2, int8 round 0
    assert "| tthf-run-dense-production-fp32 | openvino | 1 | 100,000 | 24.4 | 4,100 | predict 24.1 |" in text
    assert "| tthf-run-dense-production-int8 | openvino-int8 | 1 | 100,000 | 13.6 | 7,380 | predict 13.4 |" in text
    assert "come from 3 interleaved rounds: each round runs fp32, int8 back to back" in text
    assert "| 1 (6.0-6.5) | 1,600 | 7,000 (4.38x) |" in text
    # 7380 / 4100 = 1.80x best against best; rounds 1.84x, 4.38x, 1.60x
    assert "int8 **1.80x** (per round 1.60..4.38x; export: accepted)" in text
    assert "| tthf-run-dense-production-bf16 | - | - | - | - | not run: no native bf16 instruction" in text
    assert "| production | bf16 | - | - | not run: no native bf16 instruction" in text
    assert "| production | RealtimePredictor (openvino-int8) | 1000 | 9 | 100.0 | 180.0 | 200.0 |" in text
    rows = text.split("## Targets", 1)[1].split("## Machine", 1)[0]
    name = "`tthf-run --dense`, production model, int8 vs fp32 (openvino), interleaved rounds"
    assert f"| {name} | >= 2x | 1.80x best vs best (per round 1.60..4.38x) | **missed** |" in rows
    assert "| real-time p99, 1000 symbols | <= 75 ms | 80 ms | **missed** |" in rows  # the default model's row
    fp32_only = [
        _round(r["load_average"][0], fp32=r["runs"]["fp32"]["windows"] / r["runs"]["fp32"]["seconds"]) for r in ROUNDS
    ]
    lacking = report.render({**doc, "benchmarks": [*FULL[:-1], _e2e_rounds(*fp32_only), FULL[-1]]})
    assert "| tthf-run-dense-production-int8 |" not in lacking  # this CPU has VNNI: absent, not "not run"
    assert f"| {name} | >= 2x | not measured | - |" in lacking
    assert "windows/s against fp32 (openvino), best round against best round: fp32 only" in lacking


def test_the_int8_target_is_met_on_best_against_best_whatever_one_round_says() -> None:
    """A round where int8 ran loaded reads below 2x, yet the best rounds meet it; a slower best int8 misses."""
    met = [_round(2.0, fp32=4000, int8=8200), _round(6.0, fp32=3900, int8=5000)]
    got = _targets([*FULL, _e2e_rounds(*met)])
    name = "`tthf-run --dense`, production model, int8 vs fp32 (openvino), interleaved rounds"
    assert got[name] == ("2.05x best vs best (per round 1.28..2.05x)", "met")
    slower = [_round(2.0, fp32=4000, int8=7900), met[1]]
    assert _targets([*FULL, _e2e_rounds(*slower)])[name] == ("1.98x best vs best (per round 1.28..1.98x)", "**missed**")

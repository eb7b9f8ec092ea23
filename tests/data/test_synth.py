"""The synthetic market: contract, determinism, realistic mess, planted structure, speed."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tthf.engine.data import synth
from tthf.engine.data.calendar import NEW_YORK, session_minutes
from tthf.engine.data.marketdata import list_dates, read_day
from tthf.engine.store import open_store
from tthf.errors import UsageError

D = dt.date
MONDAY, TUESDAY = D(2024, 3, 11), D(2024, 3, 12)
HALF_DAY = D(2024, 11, 29)
RAW_SCHEMA = {
    "symbol": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "bid": pl.Float64,
    "ask": pl.Float64,
    "bid_size": pl.Float64,
    "ask_size": pl.Float64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "trade_count": pl.Int64,
    "vwap": pl.Float64,
}


def config(n: int = 20, start: dt.date = MONDAY, end: dt.date | None = None, **knobs) -> synth.SynthConfig:
    return synth.SynthConfig(n_symbols=n, start=start, end=end or start, seed=3, **knobs)


SAMPLE = config(400, MONDAY, TUESDAY)
NAMES = synth.symbols(SAMPLE)


@pytest.fixture(scope="module")
def sample() -> list[tuple[dt.date, pl.DataFrame]]:
    """A sizeable default sample: 400 symbols x 2 days (about 0.3 M regular rows)."""
    return [(day, synth.generate_day(SAMPLE, day)) for day in SAMPLE.days]


def ny_time(frame: pl.DataFrame) -> pl.Series:
    return frame.get_column("ts").dt.convert_time_zone(str(NEW_YORK)).dt.time()


def regular(frame: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    minutes = pl.Series(session_minutes(day)).dt.replace_time_zone("UTC")
    return frame.filter(pl.col("ts").is_in(minutes.implode()))


def grid(frame: pl.DataFrame, day: dt.date, column: str, names: list[str]) -> np.ndarray:
    """(symbols, regular minutes) of ``column``, NaN where the row is absent."""
    minutes = session_minutes(day)
    reg = regular(frame, day)
    s = reg.get_column("symbol").cast(pl.Enum(names)).to_physical().to_numpy()
    t = (reg.get_column("ts").dt.replace_time_zone(None).to_numpy() - minutes[0]) // np.timedelta64(1, "m")
    out = np.full((len(names), len(minutes)), np.nan)
    out[s, t.astype(np.int64)] = reg.get_column(column).to_numpy()
    return out


def clean_mid(frame: pl.DataFrame, day: dt.date, names: list[str]) -> np.ndarray:
    """Mid of usable quotes on the regular grid, forward-filled at most 5 minutes (the mask rule)."""
    usable = frame.with_columns(
        pl.when((pl.col("bid") > 0) & (pl.col("ask") > pl.col("bid")))
        .then((pl.col("bid") + pl.col("ask")) / 2)
        .alias("mid")
    )
    mid = grid(usable, day, "mid", names)
    n = mid.shape[1]
    last = np.maximum.accumulate(np.where(np.isfinite(mid), np.arange(n), -(10**6)), axis=1)
    filled = np.take_along_axis(mid, np.clip(last, 0, None), axis=1)
    return np.where(np.arange(n) - last <= 5, filled, np.nan)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def ret_1h(mid: np.ndarray) -> np.ndarray:
    out = np.full(mid.shape, np.nan)
    out[:, :-60] = np.log(mid[:, 60:] / mid[:, :-60])
    return out


# ----------------------------------------------------------------------------- contract


def test_schema_dtypes_and_order() -> None:
    frame = synth.generate_day(config(), MONDAY)
    assert dict(frame.schema) == RAW_SCHEMA
    assert frame.height > 0
    keys = frame.select("symbol", "ts")
    assert keys.equals(keys.sort("symbol", "ts"))
    assert not keys.is_duplicated().any()
    required = ["symbol", "ts", "bid", "ask", "bid_size", "ask_size", "volume", "trade_count"]
    assert sum(frame.select(required).null_count().row(0)) == 0


def test_rows_are_internally_consistent(sample) -> None:
    frame = pl.concat([f for _, f in sample])
    traded = frame.filter(pl.col("volume") > 0)
    idle = frame.filter(pl.col("volume") == 0)
    trade_columns = ["open", "high", "low", "close", "vwap"]
    assert idle.select(trade_columns).null_count().row(0) == (idle.height,) * 5
    assert (idle.get_column("trade_count") == 0).all()
    assert traded.select(trade_columns).null_count().row(0) == (0,) * 5
    assert (
        traded.filter(
            (pl.col("low") > pl.min_horizontal("open", "close"))
            | (pl.col("high") < pl.max_horizontal("open", "close"))
            | (pl.col("vwap") < pl.col("low"))
            | (pl.col("vwap") > pl.col("high"))
            | (pl.col("volume") < pl.col("trade_count"))
            | (pl.col("trade_count") < 1)
        ).height
        == 0
    )
    for column in ("bid", "ask", "open", "high", "low", "close"):  # 0.01 tick grid
        cents = frame.get_column(column).drop_nulls().to_numpy() * 100
        assert np.abs(cents - np.round(cents)).max() < 1e-6, column
    sizes = np.concatenate([frame.get_column(c).to_numpy() for c in ("bid_size", "ask_size")])
    assert (sizes % 100 == 0).all()
    sound = frame.filter((pl.col("bid") > 0) & (pl.col("ask") >= pl.col("bid")))
    assert (sound.get_column("ask") - sound.get_column("bid")).min() >= 0.01 - 1e-9  # spreads >= 1 tick


def test_symbols_are_ticker_like_sorted_and_prefix_stable() -> None:
    names = synth.symbols(config(300))
    assert names == sorted(names) and len(set(names)) == 300
    assert all(re.fullmatch(r"[A-Z]{1,5}(\.B)?", n) for n in names)
    assert set(synth.symbols(config(50))) <= set(names)
    assert synth.symbols(synth.SynthConfig(n_symbols=300, seed=4)) != names


def test_invalid_config_and_days_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="after end"):
        synth.SynthConfig(start=D(2024, 2, 1), end=D(2024, 1, 1))
    with pytest.raises(UsageError, match="no trading day"):
        synth.SynthConfig(start=D(2024, 3, 9), end=D(2024, 3, 10))
    with pytest.raises(UsageError, match="missing_rate"):
        synth.SynthConfig(missing_rate=1.5)
    with pytest.raises(UsageError, match="alpha"):
        synth.SynthConfig(garch_alpha=0.2, garch_beta=0.85)
    with pytest.raises(UsageError, match="not a trading day"):
        synth.generate_day(config(), D(2024, 12, 25))


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_frame_other_seed_differs() -> None:
    cfg = config(30)
    first = synth.generate_day(cfg, MONDAY)
    assert first.equals(synth.generate_day(cfg, MONDAY))
    other = synth.generate_day(synth.SynthConfig(n_symbols=30, start=MONDAY, end=MONDAY, seed=4), MONDAY)
    assert not first.equals(other)


def test_a_day_is_the_same_in_any_range(tmp_path: Path) -> None:
    full = config(15, D(2024, 3, 4), D(2024, 3, 15))
    one = config(15, D(2024, 3, 13), D(2024, 3, 13))
    assert synth.generate_day(full, D(2024, 3, 13)).equals(synth.generate_day(one, D(2024, 3, 13)))
    synth.generate_market(full, str(tmp_path / "full"))
    synth.generate_market(config(15, D(2024, 3, 12), D(2024, 3, 14)), str(tmp_path / "sub"))
    for day in ("2024-03-12", "2024-03-13", "2024-03-14"):
        name = f"date={day}/part-0.parquet"
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "sub" / name).read_bytes(), day


# ----------------------------------------------------------------------------- writing and the CLI


def test_generate_market_writes_trading_days_only(tmp_store_uri: str) -> None:
    cfg = config(8, D(2024, 1, 12), D(2024, 1, 16))  # Fri, weekend, MLK day, Tue
    summary = synth.generate_market(cfg, tmp_store_uri)
    assert list_dates(tmp_store_uri) == [D(2024, 1, 12), D(2024, 1, 16)]
    frames = [read_day(tmp_store_uri, day) for day in cfg.days]
    for day, frame in zip(cfg.days, frames):
        assert frame.equals(synth.generate_day(cfg, day))
    store = open_store(tmp_store_uri)
    written = sum(len(store.read_bytes(k)) for k in store.list(""))
    rows = sum(f.height for f in frames)
    assert (summary.days, summary.symbols, summary.rows, summary.bytes) == (2, 8, rows, written)
    assert summary.seconds > 0 and "2 day(s)" in str(summary)


def test_cli_writes_and_summarizes(tmp_path: Path) -> None:
    out = tmp_path / "market"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tthf.cli.synth",
            "--out",
            str(out),
            "--symbols",
            "5",
            "--start",
            "2024-07-03",
            "--end",
            "2024-07-05",
            "--seed",
            "9",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 2 day(s) x 5 symbols" in proc.stdout and "rows" in proc.stdout and " s" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["date=2024-07-03", "date=2024-07-05"]


def test_cli_errors_are_one_line_with_usage_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tthf.cli.synth import main

    assert main(["--out", str(tmp_path), "--start", "2024-03-09", "--end", "2024-03-10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tthf-synth: error:") and "no trading day" in err
    with pytest.raises(SystemExit) as exc:
        main(["--start", "March 1"])
    assert exc.value.code == 2
    assert "use YYYY-MM-DD" in capsys.readouterr().err


def test_cli_out_defaults_to_tthf_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tthf.cli.synth import build_parser

    monkeypatch.setenv("TTHF_DATA", str(tmp_path / "env-root"))
    assert build_parser().parse_args([]).out == str(tmp_path / "env-root")
    monkeypatch.delenv("TTHF_DATA")
    assert build_parser().parse_args([]).out == "./data/market"


# ----------------------------------------------------------------------------- sessions


def test_half_day_session_ends_at_13() -> None:
    cfg = config(200, HALF_DAY)
    frame = synth.generate_day(cfg, HALF_DAY)
    local = ny_time(frame)
    after = frame.filter(local >= dt.time(13, 0))
    assert after.height > 0  # post-market rows, 13:00-17:00 on a half day
    assert ny_time(after).max() < dt.time(17, 0)
    per_minute_reg = regular(frame, HALF_DAY).height / 210
    assert after.height / 240 < 0.3 * per_minute_reg  # no regular-session density after 13:00
    assert ny_time(regular(frame, HALF_DAY)).max() == dt.time(12, 59)


def test_extended_hours_rows_are_present_and_sparser(sample) -> None:
    day, frame = sample[0]
    local = ny_time(frame)
    pre = frame.filter(local < dt.time(9, 30))
    post = frame.filter(local >= dt.time(16, 0))
    assert pre.height > 0 and post.height > 0
    assert ny_time(pre).min() >= dt.time(4, 0) and ny_time(post).max() < dt.time(20, 0)
    per_minute_reg = regular(frame, day).height / 390
    assert (pre.height + post.height) / (330 + 240) < 0.3 * per_minute_reg
    no_ext = synth.generate_day(config(400, day, extended_hours=False), day)
    assert no_ext.height == regular(no_ext, day).height


# ----------------------------------------------------------------------------- mess


def test_messy_features_present_with_default_rates(sample) -> None:
    frames = pl.concat([f for _, f in sample])
    assert frames.filter((pl.col("volume") == 0) & pl.col("close").is_null()).height > 1000  # quotes, no trades
    assert frames.filter(pl.col("ask") < pl.col("bid")).height > 0  # crossed
    assert frames.filter((pl.col("bid") == 0) | (pl.col("ask") == 0)).height > 0  # zero
    missing = halts = thin = 0
    for day, frame in sample:
        present = np.isfinite(grid(frame, day, "bid", NAMES))
        missing += (~present).sum()
        thin += int((present.sum(axis=1) < 30).sum())
        halts += _gaps(present, 5, 30)
    assert missing > 0.005 * present.size
    assert halts > 0 and thin > 0


def _gaps(present: np.ndarray, lo: int, hi: int) -> int:
    """Runs of lo..hi absent minutes with rows on both sides."""
    count = 0
    for row in present:
        idx = np.flatnonzero(row)
        gaps = np.diff(idx) - 1
        count += int(((gaps >= lo) & (gaps <= hi)).sum())
    return count


def test_halts_thin_days_late_starts_and_stale_quotes_follow_their_knobs() -> None:
    day = MONDAY
    quiet = dict(n=40, start=day, missing_rate=0.0, thin_day_rate=0.0, late_start_rate=0.0)
    names = synth.symbols(config(40))

    def present(**knobs) -> np.ndarray:
        return np.isfinite(grid(synth.generate_day(config(**{**quiet, **knobs}), day), day, "bid", names))

    assert present(halt_rate=0.0).all()
    assert _gaps(present(halt_rate=1.0), 5, 30) == 40  # one halt per symbol
    assert (present(thin_day_rate=1.0).sum(axis=1) < 30).all()
    late = synth.generate_day(config(**{**quiet, "late_start_rate": 1.0}), day)
    assert ny_time(late.group_by("symbol").agg(pl.col("ts").min())).min() >= dt.time(10, 0)

    def frozen_runs(frame: pl.DataFrame) -> int:  # regular rows whose whole quote repeats the row before
        quote = regular(frame, day).select("symbol", "bid", "ask", "bid_size", "ask_size")
        return quote.filter(pl.all_horizontal(pl.all() == pl.all().shift(1))).height

    stale = frozen_runs(synth.generate_day(config(**{**quiet, "stale_rate": 1.0}), day))
    fresh = frozen_runs(synth.generate_day(config(**{**quiet, "stale_rate": 0.0}), day))
    assert stale > fresh + 40 * 2  # every symbol's episode repeats its quote for 2+ rows


# ----------------------------------------------------------------------------- planted structure


def test_intraday_volatility_is_u_shaped(sample) -> None:
    absret = np.concatenate([np.abs(np.diff(np.log(clean_mid(f, d, NAMES)), axis=1)) for d, f in sample])
    first, midday, last = (np.nanmean(absret[:, s]) for s in (slice(1, 30), slice(150, 240), slice(359, 389)))
    assert first > 1.5 * midday and last > 1.1 * midday


def _normalized_abs_returns(frames: list[tuple[dt.date, pl.DataFrame]], names: list[str]) -> np.ndarray:
    """|1-minute mid returns| per symbol-day, divided by the symbol-day's and the minute-of-day's mean."""
    absret = np.concatenate([np.abs(np.diff(np.log(clean_mid(f, d, names)), axis=1)) for d, f in frames])
    z = absret / np.nanmean(absret, axis=1, keepdims=True)
    return z / np.nanmean(z, axis=0, keepdims=True)


def test_volatility_clusters(sample) -> None:
    """Abs returns stay autocorrelated at lag 5 after removing symbol, day and time-of-day levels."""
    z = _normalized_abs_returns(sample, NAMES)
    assert corr(z[:, 60:-5], z[:, 65:]) > 0.06
    flat = config(200, MONDAY, TUESDAY, garch_alpha=0.0, garch_beta=0.0)
    z = _normalized_abs_returns([(d, synth.generate_day(flat, d)) for d in flat.days], synth.symbols(flat))
    assert abs(corr(z[:, 60:-5], z[:, 65:])) < 0.02


def _daily_log_rv_autocorrelation(cfg: synth.SynthConfig) -> float:
    names = synth.symbols(cfg)
    log_rv = np.array(
        [
            0.5
            * np.log(np.nansum(np.diff(np.log(clean_mid(synth.generate_day(cfg, d), d, names)), axis=1) ** 2, axis=1))
            for d in cfg.days
        ]
    )  # (days, symbols)
    dev = log_rv - log_rv.mean(axis=0)
    return corr(dev[:-1], dev[1:])


def test_daily_volatility_level_persists_across_days() -> None:
    start, end = D(2024, 4, 1), D(2024, 5, 24)  # 40 days
    assert _daily_log_rv_autocorrelation(config(20, start, end)) > 0.3
    assert abs(_daily_log_rv_autocorrelation(config(20, start, end, vol_dispersion=0.0))) < 0.15


def test_recent_realized_vol_forecasts_vol_10m(sample) -> None:
    past, future = [], []
    for day, frame in sample:
        r2 = np.diff(np.log(clean_mid(frame, day, NAMES)), axis=1) ** 2
        c = np.concatenate([np.zeros((r2.shape[0], 1)), np.nancumsum(r2, axis=1)], axis=1)
        past.append(np.sqrt(c[:, 30:-10] - c[:, :-40]))  # the 30 minutes up to t
        future.append(np.sqrt(c[:, 40:] - c[:, 30:-10]))  # the 10 after t
    assert corr(np.log(np.concatenate(past) + 1e-6), np.log(np.concatenate(future) + 1e-6)) > 0.3


def test_imbalance_announces_the_drift(sample) -> None:
    rets, imbs = [], []
    for day, frame in sample:
        rets.append(ret_1h(clean_mid(frame, day, NAMES)))
        bid, ask = pl.col("bid_size"), pl.col("ask_size")
        sized = frame.with_columns(((bid - ask) / (bid + ask)).alias("imb"))
        imbs.append(grid(sized, day, "imb", NAMES))
    assert corr(np.concatenate(imbs), np.concatenate(rets)) > 0.03


@pytest.mark.filterwarnings("ignore:Degrees of freedom:RuntimeWarning")  # thin-day symbols have no ret_1h
def test_oracle_forecast_correlates_and_vanishes_without_drift() -> None:
    """The latent signal predicts each symbol's standardized ret_1h, and only through the drift knob."""
    cfg, flat = config(300, MONDAY, TUESDAY), config(300, MONDAY, TUESDAY, signal_drift=0.0)
    names = synth.symbols(cfg)

    def standardized_ret_1h(c: synth.SynthConfig, day: dt.date) -> np.ndarray:
        r = ret_1h(clean_mid(synth.generate_day(c, day), day, names))
        return r / np.nanstd(r, axis=1, keepdims=True)

    signal, with_drift, without = [], [], []
    for day in cfg.days:
        oracle = synth.latent_forecast(cfg, day)
        assert oracle.get_column("symbol").unique().sort().to_list() == names
        signal.append(oracle.get_column("signal").to_numpy().reshape(300, 390))
        with_drift.append(standardized_ret_1h(cfg, day))
        without.append(standardized_ret_1h(flat, day))
    x = np.concatenate(signal)
    assert 0.08 < corr(x, np.concatenate(with_drift)) < 0.35
    assert abs(corr(x, np.concatenate(without))) < 0.05


# ----------------------------------------------------------------------------- speed


@pytest.mark.slow
def test_thousand_symbols_one_day_is_fast() -> None:
    cfg = synth.SynthConfig(n_symbols=1000, start=MONDAY, end=MONDAY, seed=1)
    synth.symbols(cfg)  # the cached universe is a one-off; time the day
    started = time.perf_counter()
    frame = synth.generate_day(cfg, MONDAY)
    seconds = time.perf_counter() - started
    print(f"\n1000 symbols x 1 day: {frame.height:,} rows in {seconds:.2f} s")
    assert seconds < 10.0

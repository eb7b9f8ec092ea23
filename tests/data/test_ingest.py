"""tthf-ingest: DBN files written with databento-dbn's own encoder and paired CSV bars, converted
to the raw schema, read back against the bars they were made from, and predicted by tthf-run."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import polars as pl
import pytest

from tthf.cli.ingest import main
from tthf.engine.data.ingest import CsvLayout, ingest_csv, ingest_dbn, parse_mapping
from tthf.engine.data.marketdata import RAW_COLUMNS, list_dates, read_day, write_day
from tthf.engine.data.synth import SynthConfig, generate_day
from tthf.engine.runs import open_run
from tthf.engine.store import open_store
from tthf.engine.testing import DAYS, make_run
from tthf.errors import DataError, UsageError

QUOTES = ("bid", "ask", "bid_size", "ask_size")
TRADES = ("open", "high", "low", "close")
MINUTE_NS = 60_000_000_000
NO_QUOTE_EVERY = 7  # every 7th traded minute of the first symbol loses its quote record: trades, no quote


@dataclass(frozen=True)
class MI:  # databento_dbn.MappingInterval
    start_date: dt.date
    end_date: dt.date
    symbol: str


@dataclass(frozen=True)
class SM:  # databento_dbn.SymbolMapping
    raw_symbol: str
    intervals: list[MI]


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    """Three synthetic days of three symbols in the raw schema: the truth the vendor files are made from."""
    cfg = SynthConfig(n_symbols=3, start=DAYS[0], end=DAYS[-1], seed=3)
    return pl.concat([generate_day(cfg, day) for day in DAYS]).sort("symbol", "ts")


def without_quote(market: pl.DataFrame) -> pl.Expr:
    """The rows whose quote the vendor files leave out: regular-session traded minutes of the first symbol."""
    local = pl.col("ts").dt.convert_time_zone("America/New_York").dt.time()
    regular = (local >= dt.time(9, 30)) & (local < dt.time(16, 0))
    traded = (pl.col("symbol") == market.get_column("symbol").min()) & (pl.col("volume") > 0)
    return traded & regular & (pl.col("ts").dt.minute() % NO_QUOTE_EVERY == 0)


def on(day: dt.date) -> pl.Expr:
    """Rows of one New York trading date."""
    return pl.col("ts").dt.convert_time_zone("America/New_York").dt.date() == day


def expected(market: pl.DataFrame, *, trade_count: bool) -> pl.DataFrame:
    """What the converted partitions must hold: the same bars, the dropped quotes null."""
    gone = without_quote(market)
    out = market.with_columns(*[pl.when(gone).then(None).otherwise(pl.col(c)).alias(c) for c in QUOTES])
    if not trade_count:  # ohlcv-1m has neither
        return out.with_columns(pl.lit(None, pl.Int64).alias("trade_count"), pl.lit(None, pl.Float64).alias("vwap"))
    # a minute without a trade bar has no trade count (null), not the 0 the synthetic feed writes
    return out.with_columns(pl.when(pl.col("volume") > 0).then(pl.col("trade_count")).alias("trade_count"))


def read_all(root: Path | str) -> pl.DataFrame:
    return pl.concat([read_day(str(root), day) for day in list_dates(str(root))]).sort("symbol", "ts")


def assert_same_bars(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.columns == list(RAW_COLUMNS)
    assert got.select("symbol", "ts").equals(want.select("symbol", "ts"))
    for c in (*QUOTES, *TRADES, "volume", "vwap"):
        g, w = got.get_column(c), want.get_column(c)
        assert g.is_null().equals(w.is_null()), c
        # fixed-point prices (1e-9 units) round-trip within half a unit
        np.testing.assert_allclose(g.drop_nulls().to_numpy(), w.drop_nulls().to_numpy(), rtol=0, atol=5e-10)
    assert got.get_column("trade_count").equals(want.get_column("trade_count"))


# --- DBN files, written with databento-dbn's Metadata encoder and record constructors -------------

MAPPED_DAYS = [*DAYS, DAYS[-1] + dt.timedelta(days=1)]  # late New York rows fall on the next UTC date


def instrument_ids(symbols: list[str]) -> dict[tuple[str, dt.date], int]:
    """Each symbol's instrument id per UTC date; the first symbol's id changes on the second day."""
    out = {}
    for i, s in enumerate(symbols):
        for day in MAPPED_DAYS:
            out[(s, day)] = 900 if i == 0 and day >= DAYS[1] else 100 + i
    return out


def metadata(schema, ids: dict[tuple[str, dt.date], int], start: int, end: int, version: int = dbn.DBN_VERSION):
    mappings = []
    for symbol in sorted({s for s, _ in ids}):
        days = sorted(d for s, d in ids if s == symbol)
        mappings.append(SM(symbol, [MI(day, day + dt.timedelta(days=1), str(ids[(symbol, day)])) for day in days]))
    return dbn.Metadata(
        dataset="XNAS.ITCH",
        start=start,
        end=end,
        stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID,
        schema=schema,
        symbols=[m.raw_symbol for m in mappings],
        mappings=mappings,
        version=version,
    )


def ns(ts: dt.datetime) -> int:
    return int(ts.timestamp()) * 1_000_000_000


def px(value: float | None) -> int:
    return dbn.UNDEF_PRICE if value is None else round(value * 1e9)


def bbo_records(market: pl.DataFrame, ids, *, consolidated: bool = False, publisher: int = 2) -> bytes:
    out = []
    kind, rtype = (dbn.CBBOMsg, dbn.RType.CBBO_1M) if consolidated else (dbn.BBOMsg, dbn.RType.BBO_1M)
    pair = dbn.ConsolidatedBidAskPair if consolidated else dbn.BidAskPair
    for r in market.filter(~without_quote(market)).iter_rows(named=True):
        level = pair(bid_px=px(r["bid"]), ask_px=px(r["ask"]), bid_sz=int(r["bid_size"]), ask_sz=int(r["ask_size"]))
        end = ns(r["ts"]) + MINUTE_NS  # ts_recv: the end of the interval, which also picks the symbol mapping
        recv = r["ts"] + dt.timedelta(minutes=1)
        out.append(
            kind(
                rtype=rtype.value,
                publisher_id=publisher,
                instrument_id=ids[(r["symbol"], day_of(recv))],
                ts_event=end - 1_000,
                price=px(r["close"] or r["bid"]),
                size=1,
                side=dbn.Side.NONE,
                ts_recv=end,
                levels=level,
            )
        )
    return b"".join(bytes(x) for x in out)


def ohlcv_records(market: pl.DataFrame, ids) -> bytes:
    out = []
    for r in market.filter(pl.col("volume") > 0).iter_rows(named=True):
        out.append(
            dbn.OHLCVMsg(
                rtype=dbn.RType.OHLCV_1M.value,
                publisher_id=2,
                instrument_id=ids[(r["symbol"], day_of(r["ts"]))],
                ts_event=ns(r["ts"]),
                open=px(r["open"]),
                high=px(r["high"]),
                low=px(r["low"]),
                close=px(r["close"]),
                volume=int(r["volume"]),
            )
        )
    return b"".join(bytes(x) for x in out)


def day_of(ts: dt.datetime) -> dt.date:
    return ts.astimezone(dt.timezone.utc).date()


def span(market: pl.DataFrame) -> tuple[int, int]:
    """The files' query range: midnight UTC of the first day to midnight after the last."""
    start = dt.datetime.combine(DAYS[0], dt.time(), dt.timezone.utc)
    return ns(start), ns(start + dt.timedelta(days=len(DAYS) + 1))


def zstd(data: bytes) -> bytes:
    out = io.BytesIO()
    coder = dbn.Transcoder(out, dbn.Encoding.DBN, dbn.Compression.ZSTD)
    coder.write(data)
    coder.finish()
    return out.getvalue()


@pytest.fixture(scope="module")
def dbn_files(market: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """bbo-1m (zstd) and ohlcv-1m (DBN version 2, plain) files of ``market``, plus one unmapped record."""
    folder = tmp_path_factory.mktemp("dbn")
    ids = instrument_ids(market.get_column("symbol").unique().sort().to_list())
    start, end = span(market)
    stray = dbn.OHLCVMsg(
        rtype=dbn.RType.OHLCV_1M.value,
        publisher_id=2,
        instrument_id=555,
        ts_event=ns(dt.datetime(2024, 1, 3, 15, 0, tzinfo=dt.timezone.utc)),
        open=px(1.0),
        high=px(1.0),
        low=px(1.0),
        close=px(1.0),
        volume=1,
    )
    quotes = folder / "xnas-itch-bbo-1m.dbn.zst"
    quotes.write_bytes(zstd(metadata(dbn.Schema.BBO_1M, ids, start, end).encode() + bbo_records(market, ids)))
    trades = folder / "xnas-itch-ohlcv-1m.dbn"
    trades.write_bytes(
        metadata(dbn.Schema.OHLCV_1M, ids, start, end, version=2).encode() + ohlcv_records(market, ids) + bytes(stray)
    )
    return quotes, trades


def test_dbn_bbo_and_ohlcv_convert_to_the_bars_they_were_made_from(market, dbn_files, tmp_path) -> None:
    quotes, trades = dbn_files
    summary = ingest_dbn([str(quotes), str(trades)], str(tmp_path / "raw"))
    want = expected(market, trade_count=False)
    assert_same_bars(read_all(tmp_path / "raw"), want)
    assert [d.date for d in summary.dates] == DAYS
    assert summary.rows == market.height and summary.symbols == 3
    assert summary.dropped == {"unmapped_instrument": 1}
    # trades without a quote in that minute keep null quotes, never a carried-forward one
    no_quote = read_all(tmp_path / "raw").filter(pl.col("bid").is_null())
    assert no_quote.height == market.filter(without_quote(market)).height > 20
    assert (no_quote.get_column("volume") > 0).all() and no_quote.get_column("close").is_not_null().all()


def test_dbn_timestamps_are_minute_starts_and_an_empty_side_is_null(tmp_path) -> None:
    ids = {("AAA", day): 7 for day in DAYS}
    minute = dt.datetime(2024, 1, 3, 15, 0, tzinfo=dt.timezone.utc)
    one_sided = dbn.BBOMsg(
        rtype=dbn.RType.BBO_1M.value,
        publisher_id=2,
        instrument_id=7,
        ts_event=0,
        price=0,
        size=0,
        side=dbn.Side.NONE,
        ts_recv=ns(minute) + MINUTE_NS,
        levels=dbn.BidAskPair(bid_px=px(10.5), ask_px=dbn.UNDEF_PRICE, bid_sz=300, ask_sz=0),
    )
    path = tmp_path / "one.dbn"
    path.write_bytes(metadata(dbn.Schema.BBO_1M, ids, ns(minute), ns(minute) + MINUTE_NS).encode() + bytes(one_sided))
    ingest_dbn([str(path)], str(tmp_path / "raw"), quotes_only=True)
    row = read_day(str(tmp_path / "raw"), DAYS[1]).row(0, named=True)
    assert row["ts"] == minute  # ts_recv 15:01:00 closes the minute that starts at 15:00:00
    assert (row["bid"], row["bid_size"], row["ask"], row["ask_size"]) == (10.5, 300.0, None, None)
    assert (row["volume"], row["close"]) == (0.0, None)


def test_records_with_a_live_send_timestamp_are_read(tmp_path) -> None:
    ids = {("AAA", day): 7 for day in DAYS}
    minute = dt.datetime(2024, 1, 3, 15, 0, tzinfo=dt.timezone.utc)
    meta = metadata(dbn.Schema.BBO_1M, ids, ns(minute), ns(minute) + MINUTE_NS)
    meta = dbn.Metadata(
        dataset=meta.dataset,
        start=meta.start,
        end=meta.end,
        stype_in=meta.stype_in,
        stype_out=meta.stype_out,
        schema=meta.schema,
        symbols=meta.symbols,
        mappings=[SM("AAA", [MI(d, d + dt.timedelta(days=1), "7") for d in DAYS])],
        ts_out=True,
    )
    record = dbn.BBOMsg(
        rtype=dbn.RType.BBO_1M.value,
        publisher_id=2,
        instrument_id=7,
        ts_event=0,
        price=0,
        size=0,
        side=dbn.Side.NONE,
        ts_recv=ns(minute) + MINUTE_NS,
        ts_out=ns(minute) + MINUTE_NS + 5,
        levels=dbn.BidAskPair(bid_px=px(10.5), ask_px=px(10.52), bid_sz=300, ask_sz=100),
    )
    assert len(bytes(record)) == dbn.BBOMsg.size_hint + 8
    (tmp_path / "live.dbn").write_bytes(meta.encode() + bytes(record))
    ingest_dbn([str(tmp_path / "live.dbn")], str(tmp_path / "raw"), quotes_only=True)
    assert read_day(str(tmp_path / "raw"), DAYS[1]).select("ts", "bid", "ask").row(0) == (minute, 10.5, 10.52)


def test_consolidated_cbbo_is_read_like_bbo(market, tmp_path) -> None:
    day = market.filter(on(DAYS[0]))
    ids = instrument_ids(day.get_column("symbol").unique().sort().to_list())
    start, end = span(day)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cbbo.dbn").write_bytes(
        metadata(dbn.Schema.CBBO_1M, ids, start, end).encode() + bbo_records(day, ids, consolidated=True)
    )
    (tmp_path / "in" / "ohlcv.dbn").write_bytes(
        metadata(dbn.Schema.OHLCV_1M, ids, start, end).encode() + ohlcv_records(day, ids)
    )
    ingest_dbn([str(tmp_path / "in")], str(tmp_path / "raw"))  # a folder: every .dbn file in it
    assert_same_bars(read_all(tmp_path / "raw"), expected(day, trade_count=False))


def test_dbn_without_trade_bars_needs_quotes_only(market, dbn_files, tmp_path) -> None:
    quotes, _ = dbn_files
    with pytest.raises(
        DataError,
        match=r"3 quoted date\(s\) \(2024-01-02\.\.2024-01-04\) have no trade bars: no "
        r"ohlcv-1m file was given.*--quotes-only",
    ):
        ingest_dbn([str(quotes)], str(tmp_path / "raw"))
    assert not (tmp_path / "raw").exists()
    summary = ingest_dbn([str(quotes)], str(tmp_path / "raw"), quotes_only=True)
    got = read_all(tmp_path / "raw")
    assert (got.get_column("volume") == 0).all() and got.get_column("close").null_count() == got.height
    assert summary.notes == ["--quotes-only: 3 date(s) without trade bars have volume 0 and null trade prices"]


def test_dbn_several_venues_need_a_publisher(market, tmp_path) -> None:
    day = market.filter(on(DAYS[0]))
    ids = instrument_ids(day.get_column("symbol").unique().sort().to_list())
    start, end = span(day)
    body = bbo_records(day, ids, publisher=2) + bbo_records(day, ids, publisher=3)
    path = tmp_path / "two-venues.dbn"
    path.write_bytes(metadata(dbn.Schema.BBO_1M, ids, start, end).encode() + body)
    with pytest.raises(DataError, match=r"two-venues\.dbn: records of 2 publishers \(venues 2, 3\).*--publisher"):
        ingest_dbn([str(path)], str(tmp_path / "raw"), quotes_only=True)
    summary = ingest_dbn([str(path)], str(tmp_path / "raw"), quotes_only=True, publisher=3)
    assert summary.dropped["other_publisher"] == len(body) // 2 // dbn.BBOMsg.size_hint
    assert summary.rows == day.filter(~without_quote(day)).height


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a dbn file at all", r"bad\.dbn: not a DBN file"),
        (b"\x28\xb5\x2f\xfd garbage", r"bad\.dbn: a damaged Zstandard file"),
    ],
)
def test_unreadable_dbn_files_are_named(tmp_path, data: bytes, message: str) -> None:
    (tmp_path / "bad.dbn").write_bytes(data)
    with pytest.raises(DataError, match=message):
        ingest_dbn([str(tmp_path / "bad.dbn")], str(tmp_path / "raw"))


def test_other_dbn_schemas_and_truncated_files_are_refused(market, tmp_path) -> None:
    ids = {("AAA", day): 7 for day in DAYS}
    (tmp_path / "mbo.dbn").write_bytes(metadata(dbn.Schema.MBO, ids, 0, 1).encode())
    with pytest.raises(DataError, match=r"mbo\.dbn: schema 'mbo' is not supported; tthf needs 1-minute bars"):
        ingest_dbn([str(tmp_path / "mbo.dbn")], str(tmp_path / "raw"))
    day = market.filter(on(DAYS[0]))
    ids = instrument_ids(day.get_column("symbol").unique().sort().to_list())
    whole = metadata(dbn.Schema.OHLCV_1M, ids, *span(day)).encode() + ohlcv_records(day, ids)
    (tmp_path / "cut.dbn").write_bytes(whole[:-7])
    with pytest.raises(DataError, match=r"cut\.dbn: .* not whole ohlcv-1m records; the file is truncated"):
        ingest_dbn([str(tmp_path / "cut.dbn")], str(tmp_path / "raw"))


@pytest.mark.s3
def test_dbn_from_and_to_s3(market, dbn_files, s3_bucket) -> None:
    quotes, trades = dbn_files
    bucket = open_store(s3_bucket)
    for path in (quotes, trades):
        bucket.write_bytes(f"vendor/{path.name}", path.read_bytes())
    # a folder of inputs and a single file, both on S3
    summary = ingest_dbn([f"{s3_bucket}/vendor", f"{s3_bucket}/vendor/{trades.name}"], f"{s3_bucket}/raw")
    assert summary.out == f"{s3_bucket}/raw" and summary.dropped["duplicate_trade_rows"] > 0
    assert_same_bars(read_all(f"{s3_bucket}/raw"), expected(market, trade_count=False))


# --- paired CSV bars -----------------------------------------------------------------------------


def csv_pair(market: pl.DataFrame, folder: Path) -> tuple[Path, Path]:
    """A vendor's layout: a quote-bar file (bid/ask OHLC + sizes) and a trade-bar file, New York local time."""
    local = pl.col("ts").dt.convert_time_zone("America/New_York").dt.strftime("%Y-%m-%d %H:%M:%S")
    quotes = market.filter(~without_quote(market)).select(
        pl.col("symbol").alias("Ticker"),
        local.alias("Time"),
        *[pl.col(side).alias(f"{side}_{p}") for side in ("bid", "ask") for p in ("open", "high", "low", "close")],
        pl.col("bid_size").cast(pl.Int64),
        pl.col("ask_size").cast(pl.Int64),
    )
    trades = market.filter(pl.col("volume") > 0).select(
        pl.col("symbol").alias("Ticker"),
        local.alias("Time"),
        *TRADES,
        pl.col("volume").cast(pl.Int64),
        pl.col("trade_count").alias("transactions"),
        "vwap",
    )
    folder.mkdir(parents=True, exist_ok=True)
    quotes.write_csv(folder / "quotes.csv")
    trades.write_csv(folder / "trades.csv")
    return folder / "quotes.csv", folder / "trades.csv"


def test_csv_quote_and_trade_bars_convert_to_the_bars_they_were_made_from(market, tmp_path) -> None:
    quotes, trades = csv_pair(market, tmp_path / "vendor")
    layout = CsvLayout(mapping=parse_mapping(["ts=Time"]), tz="America/New_York")
    summary = ingest_csv([str(quotes)], [str(trades)], str(tmp_path / "raw"), layout=layout)
    assert_same_bars(read_all(tmp_path / "raw"), expected(market, trade_count=True))
    assert summary.rows == market.height and summary.dropped == {}


def test_csv_epoch_timestamps_end_labels_and_renamed_columns(market, tmp_path) -> None:
    day = market.filter(on(DAYS[0]))
    end_ms = (pl.col("ts").dt.epoch("ms") + 60_000).alias("t")
    both = day.filter(~without_quote(day)).select(
        "symbol",
        end_ms,
        pl.col("bid").alias("BidClose"),
        pl.col("ask").alias("AskClose"),
        pl.col("bid_size").alias("BidSize"),
        pl.col("ask_size").alias("AskSize"),
        *TRADES,
        "volume",
        "trade_count",
        "vwap",
    )
    both.write_csv(tmp_path / "bars.csv")
    mapping = parse_mapping(["ts=t,bid=BidClose,ask=AskClose", "bid_size=BidSize,ask_size=AskSize"])
    layout = CsvLayout(mapping=mapping, bar_label="end")  # epoch milliseconds, told from their size
    path = str(tmp_path / "bars.csv")
    ingest_csv([path], [path], str(tmp_path / "raw"), layout=layout)  # one file with both kinds of columns
    # minutes without a quote record are not in the file at all here, so they are absent, not null
    assert_same_bars(read_all(tmp_path / "raw"), day.filter(~without_quote(day)))


def test_csv_trades_without_quotes_stay_null_and_nothing_is_invented(tmp_path) -> None:
    t = ["2024-01-03T14:30:00Z", "2024-01-03T14:31:00Z", "2024-01-03T14:32:00Z"]
    pl.DataFrame(
        {
            "symbol": ["AAA", "AAA"],
            "ts": t[:2],
            "bid_close": [10.0, None],
            "ask_close": [10.02, None],
            "bid_size": [100, None],
            "ask_size": [200, None],
        }
    ).write_csv(tmp_path / "q.csv")
    pl.DataFrame(
        {
            "symbol": ["AAA", "AAA"],
            "ts": t[1:],
            "open": [10.01, 10.03],
            "high": [10.01, 10.04],
            "low": [10.01, 10.03],
            "close": [10.01, 10.04],
            "volume": [300, 0],
        }
    ).write_csv(tmp_path / "t.csv")
    summary = ingest_csv([str(tmp_path / "q.csv")], [str(tmp_path / "t.csv")], str(tmp_path / "raw"))
    got = read_day(str(tmp_path / "raw"), DAYS[1])
    assert got.select("bid", "bid_size", "close", "volume").rows() == [
        (10.0, 100.0, None, 0.0),  # quote, no trade bar: nothing traded
        (None, None, 10.01, 300.0),  # trade, the quote row empty: null quote
        (None, None, 10.04, 0.0),  # a trade bar with volume 0 and a price is kept as the vendor wrote it
    ]
    assert summary.dropped == {"empty_quote_bar": 1}


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        (
            {"ts": ["2024-01-03 09:30:00"]},
            {},
            r"q\.csv: column 'ts' has timestamps without a time zone \(e\.g\. '2024-01-03 09:30:00'\); pass --tz",
        ),
        (
            {"ts": ["yesterday"]},
            {},
            r"q\.csv: column 'ts': cannot tell the timestamp format of 'yesterday' \(line 2\); pass --ts-format",
        ),
        (
            {"ts": ["2024-01-03 9h30"]},
            {"ts_format": "%Y-%m-%d %H:%M"},
            r"q\.csv: column 'ts' line 2: '2024-01-03 9h30' is not a timestamp",
        ),
        ({"bid_close": ["n/a"]}, {}, r"q\.csv: column 'bid_close' line 2: 'n/a' is not a number.*--null-value"),
        ({"ts": ["2024-01-03T14:30:30Z"]}, {}, r"q\.csv: column 'ts' has timestamps that are not whole minutes"),
        ({"ts": ["1704300000"]}, {"ts_unit": "ms"}, r"rows dated 1970-01-20\.\.1970-01-20 are outside .*--ts-unit"),
    ],
)
def test_csv_errors_name_the_file_the_column_and_the_fix(tmp_path, rows, kwargs, message) -> None:
    base = {
        "symbol": ["AAA"],
        "ts": ["2024-01-03T14:30:00Z"],
        "bid_close": ["10"],
        "ask_close": ["10.01"],
        "bid_size": ["1"],
        "ask_size": ["1"],
    }
    pl.DataFrame({**base, **rows}).write_csv(tmp_path / "q.csv")
    with pytest.raises(DataError, match=message):
        ingest_csv([str(tmp_path / "q.csv")], [], str(tmp_path / "raw"), layout=CsvLayout(**kwargs), quotes_only=True)
    assert not (tmp_path / "raw").exists()


def test_csv_missing_column_lists_what_the_file_has_and_how_to_map_it(tmp_path) -> None:
    pl.DataFrame(
        {
            "symbol": ["AAA"],
            "ts": ["2024-01-03T14:30:00Z"],
            "BidPx": [10.0],
            "ask": [10.01],
            "bid_size": [1],
            "ask_size": [1],
        }
    ).write_csv(tmp_path / "q.csv")
    with pytest.raises(
        DataError,
        match=r"q\.csv: no column for 'bid' \(looked for bid_close, bid\); its columns are "
        r"\['symbol', 'ts', 'BidPx'.*--map FIELD=COLUMN",
    ):
        ingest_csv([str(tmp_path / "q.csv")], [], str(tmp_path / "raw"), quotes_only=True)
    with pytest.raises(UsageError, match="no trade files given.*--quotes-only"):
        ingest_csv([str(tmp_path / "q.csv")], [], str(tmp_path / "raw"))
    with pytest.raises(UsageError, match="--map: unknown field"):
        ingest_csv([str(tmp_path / "q.csv")], [], str(tmp_path / "raw"), layout=CsvLayout(mapping={"bidd": "x"}))


def test_conflicting_bars_fail_before_anything_is_written(market, tmp_path) -> None:
    quotes, trades = csv_pair(market, tmp_path / "vendor")
    clash = pl.read_csv(quotes).tail(1).with_columns(pl.col("bid_close") - 0.01)
    clash.write_csv(tmp_path / "vendor" / "late.csv")
    layout = CsvLayout(mapping={"ts": "Time"}, tz="America/New_York")
    with pytest.raises(
        DataError,
        match=r"quotes\.csv, .*late\.csv: 2 quote rows share a \(symbol, ts\) with "
        r"different values",
    ):
        ingest_csv(
            [str(quotes), str(tmp_path / "vendor" / "late.csv")], [str(trades)], str(tmp_path / "raw"), layout=layout
        )
    assert not (tmp_path / "raw").exists()
    # an exact repeat is only counted
    pl.read_csv(quotes).tail(2).write_csv(tmp_path / "vendor" / "again.csv")
    summary = ingest_csv(
        [str(quotes), str(tmp_path / "vendor" / "again.csv")], [str(trades)], str(tmp_path / "raw"), layout=layout
    )
    assert summary.dropped == {"duplicate_quote_rows": 2}


def test_weekend_rows_are_dropped_and_existing_dates_need_overwrite(tmp_path) -> None:
    t = ["2024-01-06T15:00:00Z", "2024-01-03T15:00:00Z"]  # a Saturday, then a Wednesday
    pl.DataFrame(
        {
            "symbol": ["AAA", "AAA"],
            "ts": t,
            "bid": [10.0, 10.0],
            "ask": [10.01, 10.01],
            "bid_size": [1, 1],
            "ask_size": [1, 1],
        }
    ).write_csv(tmp_path / "q.csv")
    out = str(tmp_path / "raw")
    write_day(out, DAYS[1], generate_day(SynthConfig(n_symbols=2, start=DAYS[0], end=DAYS[-1]), DAYS[1]), part="old")
    with pytest.raises(
        UsageError,
        match=r"1 of the 1 dates to write already have data \(2024-01-03\.\.2024-01-03\); "
        r"pass --overwrite",
    ):
        ingest_csv([str(tmp_path / "q.csv")], [], out, quotes_only=True)
    summary = ingest_csv([str(tmp_path / "q.csv")], [], out, quotes_only=True, overwrite=True)
    assert summary.dropped == {"non_trading_day": 1}
    assert sorted(p.name for p in (tmp_path / "raw" / "date=2024-01-03").iterdir()) == ["part-0.parquet"]
    assert read_day(out, DAYS[1]).height == 1


# --- the CLI, and tthf-run on what it wrote -------------------------------------------------------


@pytest.mark.slow
def test_cli_converts_both_formats_and_tthf_run_predicts_them(market, dbn_files, tmp_path, capsys) -> None:
    from tthf.engine.runtime.batch import run_inference
    from tthf.engine.runtime.options import RunOptions

    quotes, trades = dbn_files
    from_dbn, from_csv = tmp_path / "from-dbn", tmp_path / "from-csv"
    assert main(["dbn", str(quotes), str(trades), "--out", str(from_dbn)]) == 0
    out = capsys.readouterr().out
    assert f"wrote 3 date(s) 2024-01-02..2024-01-04 to {from_dbn}: {market.height:,} rows, 3 symbols" in out
    assert "left out: 1 rows:" in out and "unmapped_instrument" in out
    assert main(["dbn", str(quotes), "--out", str(tmp_path / "x")]) == 3  # no trades: a data error, exit code 3
    assert "--quotes-only" in capsys.readouterr().err
    csv_quotes, csv_trades = csv_pair(market, tmp_path / "vendor")
    assert (
        main(
            [
                "csv",
                "--quotes",
                str(csv_quotes),
                "--trades",
                str(csv_trades),
                "--map",
                "ts=Time",
                "--tz",
                "America/New_York",
                "--out",
                str(from_csv),
            ]
        )
        == 0
    )
    store = str(tmp_path / "runs")
    make_run(store, from_dbn)
    null_quotes = market.filter(without_quote(market)).height
    for root in (from_dbn, from_csv):
        options = RunOptions(
            dates="2024-01-02:2024-01-04", dense=True, backend="torch", data_root=str(root), overwrite=True
        )
        summary = run_inference(open_run(store, "jennifer"), options)
        assert [r.status for r in summary.results] == ["ok"] * 3, [r.reason for r in summary.results]
        assert all(r.rows > 0 for r in summary.results)
        # the minutes with a trade but no quote reach the engine as null quotes and are counted there
        assert sum(r.counts["quote_null"] for r in summary.results) == null_quotes


def test_cli_csv_with_a_mapping_file(market, tmp_path, capsys) -> None:
    day = market.filter(on(DAYS[2]))
    quotes, trades = csv_pair(day, tmp_path / "vendor")
    (tmp_path / "map.json").write_text('{"ts": "Time", "symbol": "Ticker"}')
    code = main(
        [
            "csv",
            "--quotes",
            str(quotes),
            "--trades",
            str(trades),
            "--map-file",
            str(tmp_path / "map.json"),
            "--tz",
            "America/New_York",
            "--out",
            str(tmp_path / "raw"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert f"{day.height:,} rows, 3 symbols" in capsys.readouterr().out
    assert main(["csv", "--quotes", str(quotes), "--out", str(tmp_path / "raw2")]) == 2

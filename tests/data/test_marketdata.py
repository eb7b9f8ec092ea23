from __future__ import annotations

import datetime as dt
import io

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tthf.engine.data import marketdata as md
from tthf.engine.store import Store, open_store
from tthf.errors import DataError, NoDataError

DAY = dt.date(2024, 3, 5)  # 09:30 New York = 14:30 UTC (EST)


def bars(n: int = 3, symbol: str = "AAA", start: dt.datetime = dt.datetime(2024, 3, 5, 14, 30)) -> pl.DataFrame:
    ts = [start + dt.timedelta(minutes=i) for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "ts": pl.Series(ts).dt.replace_time_zone("UTC"),
            "bid": [100.0 + i for i in range(n)],
            "ask": [100.1 + i for i in range(n)],
            "bid_size": [5.0] * n,
            "ask_size": [7.0] * n,
            "open": [None] + [100.05] * (n - 1),
            "high": [None] + [100.2] * (n - 1),
            "low": [None] + [99.9] * (n - 1),
            "close": [None] + [100.1] * (n - 1),
            "volume": [0.0] + [300.0] * (n - 1),
        }
    )


def put_parquet(store: Store, key: str, table: pa.Table | pl.DataFrame) -> None:
    """Write a file as some other writer would, bypassing write_day's validation."""
    buf = io.BytesIO()
    pq.write_table(table.to_arrow() if isinstance(table, pl.DataFrame) else table, buf)
    store.write_bytes(key, buf.getvalue())


def test_write_list_read_round_trip(tmp_store_uri: str) -> None:
    first = bars(3)
    uri = md.write_day(tmp_store_uri, DAY, first)
    assert uri.endswith("date=2024-03-05/part-0.parquet")
    md.write_day(tmp_store_uri, DAY, bars(2, "BBB"), part="part-1")
    md.write_day(tmp_store_uri, dt.date(2024, 3, 4), bars(1, start=dt.datetime(2024, 3, 4, 14, 30)))
    assert md.list_dates(tmp_store_uri) == [dt.date(2024, 3, 4), DAY]
    counts: dict[str, int] = {}
    out = md.read_day(open_store(tmp_store_uri), DAY, counts=counts)
    assert out.columns == list(md.RAW_COLUMNS)
    assert out.schema["ts"] == pl.Datetime("us", "UTC")
    assert out.get_column("symbol").to_list() == ["AAA"] * 3 + ["BBB"] * 2
    assert out.head(3).drop("trade_count", "vwap").equals(first)
    assert out.get_column("trade_count").null_count() == 5 and out.schema["trade_count"] == pl.Int64
    assert counts == {md.DUPLICATES_DROPPED: 0, md.WRONG_PARTITION: 0}


def test_list_dates_ignores_foreign_files_and_empty_partitions(tmp_path) -> None:
    store = open_store(tmp_path)
    md.write_day(store, DAY, bars())
    store.write_bytes("date=2024-03-06/_SUCCESS", b"")
    store.write_bytes("README.txt", b"")
    store.write_bytes("date=2024-03-07/nested/x.parquet", b"")
    (tmp_path / "date=2024-03-08").mkdir()
    assert md.list_dates(store) == [DAY]
    assert md.list_dates(tmp_path / "does-not-exist") == []


def test_invalid_partition_date_names_the_folder(tmp_path) -> None:
    open_store(tmp_path).write_bytes("date=2024-02-30/part-0.parquet", b"")
    with pytest.raises(DataError, match=r"date=2024-02-30.*rename"):
        md.list_dates(tmp_path)


def test_compatible_types_are_cast(tmp_path) -> None:
    store = open_store(tmp_path)
    frame = bars(3).with_columns(
        pl.col("bid").cast(pl.Float32),
        pl.col("bid_size").cast(pl.Int32),
        pl.col("volume").cast(pl.UInt16),
        pl.col("ts").dt.cast_time_unit("ns").dt.convert_time_zone("America/New_York"),
        pl.col("symbol").cast(pl.Categorical),
        pl.Series("trade_count", [None, 3, 4], pl.Int16),
    )
    put_parquet(store, "date=2024-03-05/x.parquet", frame)
    out = md.read_day(store, DAY)
    assert out.schema == pl.Schema({c.name: pl.from_arrow(pa.array([], c.type)).dtype for c in md.RAW_SCHEMA})
    assert out.get_column("ts").to_list() == bars(3).get_column("ts").to_list()
    assert out.get_column("trade_count").to_list() == [None, 3, 4]
    assert out.get_column("symbol").to_list() == ["AAA"] * 3


def test_millisecond_timestamps_are_cast(tmp_path) -> None:
    store = open_store(tmp_path)
    put_parquet(store, "date=2024-03-05/x.parquet", bars(2).with_columns(pl.col("ts").dt.cast_time_unit("ms")))
    assert md.read_day(store, DAY).get_column("ts").to_list() == bars(2).get_column("ts").to_list()


def test_extra_columns_are_dropped(tmp_path) -> None:
    store = open_store(tmp_path)
    put_parquet(store, "date=2024-03-05/x.parquet", bars(2).with_columns(pl.lit("x").alias("exchange")))
    assert md.read_day(store, DAY).columns == list(md.RAW_COLUMNS)


def test_missing_date_is_no_data_error(tmp_store_uri: str) -> None:
    md.write_day(tmp_store_uri, DAY, bars())
    with pytest.raises(NoDataError, match=r"2024-03-06.*date=2024-03-06"):
        md.read_day(tmp_store_uri, dt.date(2024, 3, 6))


def test_corrupt_parquet_names_the_file(tmp_store: Store) -> None:
    tmp_store.write_bytes("date=2024-03-05/bad.parquet", b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"date=2024-03-05/bad\.parquet: not a readable Parquet file"):
        md.read_day(tmp_store, DAY)


def test_missing_required_column_names_file_and_column(tmp_store: Store) -> None:
    put_parquet(tmp_store, "date=2024-03-05/part-0.parquet", bars().drop("ask_size"))
    with pytest.raises(DataError) as info:
        md.read_day(tmp_store, DAY)
    message = str(info.value)
    assert tmp_store.uri("date=2024-03-05/part-0.parquet") in message
    assert "required column 'ask_size' (double) is missing" in message
    assert "re-write" in message


def test_a_file_whose_names_differ_in_case_lists_its_columns_and_the_renames(tmp_store: Store) -> None:
    vendor = bars().rename({"symbol": "Symbol", "ts": "TS", "bid": "Bid"}).with_columns(pl.lit("X").alias("venue"))
    put_parquet(tmp_store, "date=2024-03-05/part-0.parquet", vendor)
    with pytest.raises(DataError) as info:
        md.read_day(tmp_store, DAY)
    message = str(info.value)
    assert message.startswith(
        f"{tmp_store.uri('date=2024-03-05/part-0.parquet')}: required columns 'symbol' (string), "
        "'ts' (timestamp[us, tz=UTC]), 'bid' (double) are missing; the file has "
        "['Symbol', 'TS', 'Bid', 'ask', 'bid_size', 'ask_size', 'open', 'high', 'low', 'close', 'volume', 'venue']. "
        "column names are case-sensitive: rename Symbol->symbol, TS->ts, Bid->bid. fix the writer"
    )
    # writing is as strict, and as helpful
    with pytest.raises(DataError, match=r"rename Symbol->symbol, TS->ts, Bid->bid\."):
        md.write_day(tmp_store, DAY, vendor)
    # names that are not a case variant get no rename
    put_parquet(tmp_store, "date=2024-03-05/part-0.parquet", bars().rename({"bid": "bid_px"}))
    with pytest.raises(DataError) as info:
        md.read_day(tmp_store, DAY)
    assert "'bid_px'" in str(info.value) and "rename" not in str(info.value)


def test_an_optional_column_that_differs_in_case_is_read_as_null_with_a_warning(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(tmp_path)
    put_parquet(store, "date=2024-03-05/x.parquet", bars().with_columns(pl.lit(100.0).alias("VWAP")))
    with caplog.at_level("WARNING", logger="tthf.data"):
        out = md.read_day(store, DAY)
    assert out.get_column("vwap").null_count() == out.height
    (record,) = caplog.records
    assert record.getMessage() == (
        f"{store.uri('date=2024-03-05/x.parquet')}: column 'VWAP' is ignored and the optional 'vwap' is read as null "
        "(names are case-sensitive); rename VWAP->vwap"
    )
    assert md.case_renames(["vwap", "VWAP"]) == {}  # the right name is there: the other is an extra column


@pytest.mark.parametrize(
    ("column", "value", "found"),
    [
        ("bid", pl.lit("1.0"), "large_string"),
        ("symbol", pl.lit(7), "int32"),
        ("trade_count", pl.lit(1.5), "double"),
        ("ts", pl.lit(DAY), "date32"),
    ],
)
def test_wrong_type_names_file_column_expected_and_found(tmp_path, column: str, value: pl.Expr, found: str) -> None:
    store = open_store(tmp_path)
    put_parquet(store, "date=2024-03-05/part-0.parquet", bars().with_columns(value.alias(column)))
    expected = {c.name: str(c.type) for c in md.RAW_SCHEMA}[column]
    with pytest.raises(DataError) as info:
        md.read_day(store, DAY)
    message = str(info.value)
    assert f"part-0.parquet: column {column!r} has type {found}" in message
    assert f"expected {expected}" in message


def test_naive_timestamps_say_write_utc(tmp_path) -> None:
    store = open_store(tmp_path)
    put_parquet(store, "date=2024-03-05/part-0.parquet", bars().with_columns(pl.col("ts").dt.replace_time_zone(None)))
    with pytest.raises(DataError, match=r"part-0\.parquet: column 'ts' holds naive timestamps.*Write UTC"):
        md.read_day(store, DAY)


def test_null_quotes_are_read_as_nulls(tmp_store_uri: str) -> None:
    """A null quote is 'no quote update that minute': read as stored (the cleaning counts it), and writable."""
    frame = bars(4).with_columns(
        pl.Series("bid", [100.0, None, None, 103.0]),
        pl.Series("ask", [100.1, None, 102.1, 103.1]),
        pl.Series("bid_size", [5.0, None, None, None]),
        pl.Series("ask_size", [None] * 4, pl.Float64),
    )
    md.write_day(tmp_store_uri, DAY, frame)
    out = md.read_day(tmp_store_uri, DAY)
    assert out.drop("trade_count", "vwap").equals(frame)
    assert [out.get_column(c).null_count() for c in ("bid", "ask", "bid_size", "ask_size")] == [2, 1, 3, 4]


def test_all_null_quote_columns_of_type_null_are_read(tmp_path) -> None:
    store = open_store(tmp_path)
    put_parquet(store, "date=2024-03-05/p.parquet", bars().with_columns(pl.lit(None).alias("bid_size")))
    out = md.read_day(store, DAY)
    assert out.schema["bid_size"] == pl.Float64 and out.get_column("bid_size").null_count() == 3


def test_nulls_in_key_and_volume_columns_are_read_but_not_written(tmp_path) -> None:
    """Rows with a null symbol, ts or volume are confined problems: read (the cleaning drops and counts them)."""
    store = open_store(tmp_path)
    frame = bars(4).with_columns(
        pl.Series("symbol", ["AAA", None, "AAA", "AAA"]),
        pl.Series("ts", [*bars(4).get_column("ts").to_list()[:2], None, None]),
        pl.Series("volume", [0.0, 1.0, None, 3.0]),
    )
    put_parquet(store, "date=2024-03-05/p.parquet", frame)
    out = md.read_day(store, DAY)  # the two null-ts rows differ: still not a contradicting duplicate
    assert out.drop("trade_count", "vwap").equals(frame)
    with pytest.raises(DataError, match=r"part-0\.parquet: column 'symbol' has 1 null value\(s\) \(first at row 1\)"):
        md.write_day(tmp_path / "w", DAY, frame)
    with pytest.raises(DataError, match=r"column 'volume' has 1 null value\(s\) \(first at row 2\)"):
        md.write_day(
            tmp_path / "w",
            DAY,
            frame.with_columns(pl.col("symbol").fill_null("AAA"), pl.col("ts").fill_null(frame.get_column("ts")[0])),
        )
    assert md.list_dates(tmp_path / "w") == []


def test_out_of_range_integers_never_fail_the_file(tmp_path) -> None:
    """uint64 -1 sentinels wrap to a negative trade_count (counted trade_invalid); big integers round to float."""
    store = open_store(tmp_path)
    table = bars(3).to_arrow()
    table = table.set_column(table.schema.get_field_index("volume"), "volume", pa.array([0, 2**53 + 1, 7], pa.int64()))
    table = table.append_column("trade_count", pa.array([2**64 - 1, 3, 2**63], pa.uint64()))
    put_parquet(store, "date=2024-03-05/p.parquet", table)
    out = md.read_day(store, DAY)
    assert out.get_column("trade_count").to_list() == [-1, 3, -(2**63)]
    assert out.get_column("volume").to_list() == [0.0, float(2**53), 7.0]


def test_only_the_schema_columns_are_decoded(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path)
    put_parquet(store, "date=2024-03-05/p.parquet", bars(2).with_columns(pl.lit("x").alias("exchange")))
    asked: list = []
    read = pq.ParquetFile.read
    monkeypatch.setattr(
        pq.ParquetFile,
        "read",
        lambda self, columns=None, **kw: asked.append(columns) or read(self, columns=columns, **kw),
    )
    md.read_day(store, DAY)
    assert asked == [[c for c in md.RAW_COLUMNS if c not in ("trade_count", "vwap")]]


def test_a_schema_column_twice_is_refused(tmp_path) -> None:
    store = open_store(tmp_path)
    table = bars(2).to_arrow()
    put_parquet(store, "date=2024-03-05/p.parquet", table.append_column("bid", table.column("bid")))
    with pytest.raises(DataError, match=r"p\.parquet: column 'bid' appears more than once"):
        md.read_day(store, DAY)


def test_write_day_validates_before_writing(tmp_path) -> None:
    with pytest.raises(DataError, match="required column 'volume'"):
        md.write_day(tmp_path, DAY, bars().drop("volume"))
    assert md.list_dates(tmp_path) == []


def test_file_in_the_wrong_partition(tmp_path) -> None:
    """Alone it leaves the date without data of its own: an error that says where the file belongs."""
    store = open_store(tmp_path)
    put_parquet(store, "date=2024-03-05/p.parquet", bars(start=dt.datetime(2024, 3, 6, 14, 30)))
    with pytest.raises(DataError, match=r"p\.parquet: partition date=2024-03-05 but its ts values fall on 2024-03-06"):
        md.read_day(store, DAY)
    with pytest.raises(DataError, match=r"ts values fall on 2024-03-06.*move the file"):
        md.write_day(tmp_path / "w", DAY, bars(start=dt.datetime(2024, 3, 6, 14, 30)))


def test_a_misplaced_file_next_to_good_ones_is_dropped_and_counted(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(tmp_path)
    put_parquet(store, "date=2024-03-05/a.parquet", bars(3))
    put_parquet(store, "date=2024-03-05/b.parquet", bars(4, "BBB", start=dt.datetime(2024, 3, 6, 14, 30)))
    counts: dict[str, int] = {}
    with caplog.at_level("WARNING", logger="tthf.data"):
        out = md.read_day(store, DAY, counts=counts)
    assert out.drop("trade_count", "vwap").equals(bars(3))
    assert counts == {md.DUPLICATES_DROPPED: 0, md.WRONG_PARTITION: 4}
    assert "b.parquet: partition date=2024-03-05" in caplog.text and "4 rows are ignored" in caplog.text


def test_extended_hours_rows_are_kept(tmp_path) -> None:
    """Rows outside the session stay (features.py drops them); 20:30 New York is the next UTC day."""
    late = bars(2, start=dt.datetime(2024, 3, 6, 1, 30))
    md.write_day(tmp_path, DAY, pl.concat([bars(2), late]))
    assert md.read_day(tmp_path, DAY).height == 4


def test_identical_duplicates_are_dropped_and_counted(tmp_store: Store) -> None:
    frame = bars(3)
    put_parquet(tmp_store, "date=2024-03-05/a.parquet", pl.concat([frame, frame.head(1)]))
    put_parquet(tmp_store, "date=2024-03-05/b.parquet", frame.tail(1))  # same row in another file
    counts = {md.DUPLICATES_DROPPED: 1}
    out = md.read_day(tmp_store, DAY, counts=counts)
    assert out.height == 3
    assert counts[md.DUPLICATES_DROPPED] == 3  # accumulates onto what was there
    assert out.drop("trade_count", "vwap").equals(frame)


def test_conflicting_duplicates_name_files_and_an_example(tmp_store: Store) -> None:
    frame = bars(3)
    put_parquet(tmp_store, "date=2024-03-05/a.parquet", frame)
    put_parquet(tmp_store, "date=2024-03-05/b.parquet", frame.tail(1).with_columns(pl.lit(1.0).alias("bid")))
    with pytest.raises(DataError) as info:
        md.read_day(tmp_store, DAY)
    message = str(info.value)
    assert tmp_store.uri("date=2024-03-05/a.parquet") in message
    assert tmp_store.uri("date=2024-03-05/b.parquet") in message
    assert "symbol='AAA' ts=2024-03-05T14:32:00+00:00" in message

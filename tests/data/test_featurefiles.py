"""The user's feature files: path templates (flat and date= folders), local and S3, dates listed and read."""

from __future__ import annotations

import datetime as dt
import io

import polars as pl
import pytest

from tthf.engine.config import FeatureFiles
from tthf.engine.data.featurefiles import check_template, list_feature_dates, read_feature_day
from tthf.engine.store import Store, open_store
from tthf.errors import DataError, NoDataError

DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]


def write(store: Store, template: str) -> FeatureFiles:
    for day in DAYS:
        ts = dt.datetime.combine(day, dt.time(14, 31), dt.timezone.utc)
        frame = pl.DataFrame({"symbol": ["A", "B"], "ts": [ts, ts], "x": [1, 2], "y": [0.5, None]})
        buf = io.BytesIO()
        frame.write_parquet(buf)
        store.write_bytes(template.replace("{date}", day.isoformat()).replace("*", "part-0"), buf.getvalue())
    store.write_bytes("notes.txt", b"not a day")
    return FeatureFiles(root=store.uri(), columns=["x", "y"], path=template)


@pytest.mark.parametrize("template", ["{date}.parquet", "date={date}/*.parquet", "daily/f_{date}.parquet"])
def test_each_layout_lists_its_dates_and_reads_a_day(tmp_path: object, template: str) -> None:
    store = open_store(str(tmp_path))
    files = write(store, template)
    assert list_feature_dates(store, files) == DAYS
    counts: dict[str, int] = {}
    rows = read_feature_day(store, files, DAYS[1], files.columns, counts=counts)
    assert rows.columns == ["symbol", "ts", "x", "y"] and rows["x"].dtype == pl.Float64
    assert rows["ts"].dtype == pl.Datetime("us", "UTC") and counts["file_rows_in"] == 2
    with pytest.raises(NoDataError, match="no feature file for 2024-01-04"):
        read_feature_day(store, files, dt.date(2024, 1, 4), files.columns)


@pytest.mark.parametrize("bad", ["features.parquet", "{date}.csv", "/abs/{date}.parquet", "{date}/{date}.parquet"])
def test_a_template_needs_one_date_and_parquet(bad: str) -> None:
    with pytest.raises(DataError, match="one \\{date\\} ending in .parquet"):
        check_template(bad)


@pytest.mark.s3
def test_a_feature_root_on_s3(s3_bucket: str) -> None:
    store = open_store(f"{s3_bucket}/features")
    files = write(store, "date={date}/*.parquet")
    assert files.root.startswith("s3://") and list_feature_dates(open_store(files.root), files) == DAYS
    rows = read_feature_day(open_store(files.root), files, DAYS[0], ["y"])
    assert rows["y"].null_count() == 1

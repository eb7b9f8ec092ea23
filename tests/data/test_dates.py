from __future__ import annotations

import datetime as dt

import pytest

from tthf.engine.data.calendar import trading_days
from tthf.engine.data.dates import parse_dates
from tthf.errors import NoDataError, UsageError

D = dt.date
# Trading days Dec 2023 .. Apr 2024 with data, minus a few gaps.
GAPS = {D(2024, 1, 10), D(2024, 2, 29), D(2024, 3, 1)}
AVAILABLE = [d for d in trading_days(D(2023, 12, 1), D(2024, 4, 30)) if d not in GAPS]


def test_day() -> None:
    sel = parse_dates("2024-03-05", AVAILABLE)
    assert sel.dates == [D(2024, 3, 5)] and sel.missing == []


def test_missing_day_alone_is_no_data() -> None:
    with pytest.raises(NoDataError, match=r"'2024-03-01'.*nearest dates with data: 2024-02-28, 2024-03-04"):
        parse_dates("2024-03-01", AVAILABLE)


def test_month_reports_missing_trading_days() -> None:
    sel = parse_dates("2024-02", AVAILABLE)
    assert sel.dates[0] == D(2024, 2, 1) and sel.dates[-1] == D(2024, 2, 28)
    assert len(sel.dates) == len(trading_days(D(2024, 2, 1), D(2024, 2, 29))) - 1
    assert D(2024, 2, 19) not in sel.dates  # Presidents' Day: not trading, not missing
    assert sel.missing == [D(2024, 2, 29)]


def test_year_selects_only_that_year_and_reports_uncovered_days() -> None:
    sel = parse_dates("2024", AVAILABLE)
    assert sel.dates == [d for d in AVAILABLE if d.year == 2024]
    assert sel.missing[:3] == [D(2024, 1, 10), D(2024, 2, 29), D(2024, 3, 1)]
    assert sel.missing[3] == D(2024, 5, 1)  # beyond the data: requested, so reported
    assert all(d.year == 2024 for d in sel.missing)


def test_month_range_is_inclusive_of_whole_months() -> None:
    sel = parse_dates("2024-01:2024-03", AVAILABLE)
    assert sel.dates[0] == D(2024, 1, 2) and sel.dates[-1] == D(2024, 3, 28)  # Mar 29 2024 = Good Friday
    assert sel.missing == sorted(GAPS)


def test_range_across_years_and_mixed_granularity() -> None:
    sel = parse_dates("2023-12-28:2024-01", AVAILABLE)
    assert sel.dates[:3] == [D(2023, 12, 28), D(2023, 12, 29), D(2024, 1, 2)]
    assert sel.dates[-1] == D(2024, 1, 31)
    assert parse_dates("2023:2024-01-03", AVAILABLE).dates[0] == D(2023, 12, 1)
    assert parse_dates("2024-04-29:2024-04-30", AVAILABLE).dates == [D(2024, 4, 29), D(2024, 4, 30)]


def test_comma_list_is_sorted_and_unique() -> None:
    sel = parse_dates(" 2024-03-05 , 2024-01-02:2024-01-03,2024-03-04:2024-03-05 ", AVAILABLE)
    assert sel.dates == [D(2024, 1, 2), D(2024, 1, 3), D(2024, 3, 4), D(2024, 3, 5)]
    assert sel.spec.strip().startswith("2024-03-05")


def test_list_with_one_empty_part_still_reports_it() -> None:
    sel = parse_dates("2024-03-01,2024-03-04", AVAILABLE)
    assert sel.dates == [D(2024, 3, 4)] and sel.missing == [D(2024, 3, 1)]


def test_future_days_are_not_missing() -> None:
    year = dt.date.today().year + 1
    available = [D(year, 1, 2)]
    assert parse_dates(str(year), available).missing == []


def test_nothing_selected_names_nearest_and_coverage() -> None:
    with pytest.raises(NoDataError) as info:
        parse_dates("2025", AVAILABLE, source="s3://bucket/market")
    message = str(info.value)
    assert "s3://bucket/market" in message
    assert "nearest dates with data: 2024-04-30" in message
    assert f"data covers 2023-12-01..2024-04-30 ({len(AVAILABLE)} dates)" in message


def test_no_data_at_all_says_generate() -> None:
    with pytest.raises(NoDataError, match="no data at all.*tthf-synth"):
        parse_dates("2024", [])


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "24",
        "2024-3",
        "2024-13",
        "2024-02-30",
        "2024/03",
        "2024-03-05:",
        ":2024",
        "2024:2023",
        "2024-03-05:2024-03-04",
        "2024,,2025",
        "2024:2025:2026",
        "last week",
    ],
)
def test_bad_specs_list_the_accepted_forms(spec: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_dates(spec, AVAILABLE)
    message = str(info.value)
    assert repr(spec) in message
    assert "YYYY-MM-DD" in message or "earlier end first" in message


def test_latest_is_the_newest_trading_date_with_data() -> None:
    weekend = D(2024, 5, 4)  # a Saturday partition (a vendor's stray file) is not a trading date
    sel = parse_dates("latest", [*AVAILABLE, weekend])
    assert sel.dates == [D(2024, 4, 30)] and sel.missing == [] and sel.spec == "latest"
    with pytest.raises(NoDataError, match="no trading date"):
        parse_dates("latest", [weekend])


def test_new_needs_a_run() -> None:
    with pytest.raises(UsageError, match="--dates new needs a run"):
        parse_dates("new", AVAILABLE)


def test_completed_dates_leave_an_open_session_for_later() -> None:
    from tthf.engine.data.calendar import NEW_YORK
    from tthf.engine.data.dates import completed_dates

    have = [D(2024, 4, 26), D(2024, 4, 27), D(2024, 4, 29), D(2024, 4, 30)]  # the 27th is a Saturday
    before_close = dt.datetime(2024, 4, 30, 15, 59, tzinfo=NEW_YORK)
    assert completed_dates(have, before_close) == [D(2024, 4, 26), D(2024, 4, 29)]
    assert completed_dates(have, before_close + dt.timedelta(minutes=1))[-1] == D(2024, 4, 30)

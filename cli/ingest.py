"""``tthf-ingest``: convert vendor minute bars (Databento DBN, paired CSV quote/trade bars) to the raw schema."""

from __future__ import annotations

import argparse
import sys

from tthf.cli._common import (
    add_data_option,
    add_endpoint_option,
    add_logging_option,
    command_parser,
    open_data_from_args,
    progress,
    run_cli,
)

EPILOG = """\
formats:
  dbn   Databento DBN files (.dbn or .dbn.zst; folders are searched): bbo-1m or cbbo-1m quotes,
        with ohlcv-1m trades. Each file's metadata says its schema and maps instrument ids to symbols.
  csv   paired minute bars: --quotes files with bid/ask close and sizes, --trades files with
        open/high/low/close/volume (trade_count and vwap when present). Columns are found by their
        common names or named with --map FIELD=COLUMN; see docs/data.md, "Ingesting vendor files".

Writes {out}/date=YYYY-MM-DD/part-0.parquet for every New York trading date in the input (rows
outside the regular session are kept; tthf-run ignores them). Missing quotes or trades stay
null, never filled in. Every date is validated before the first is written, each partition is
written atomically, and dates that already have data are refused unless --overwrite.
Ends with a summary: dates, rows, symbols, and every row left out with the reason.

examples:
  tthf-ingest dbn data/xnas-bbo-1m.dbn.zst data/xnas-ohlcv-1m.dbn.zst --out data/market
  tthf-ingest csv --quotes vendor/quotes/ --trades vendor/trades/ --tz America/New_York \\
                  --map ts=Date+Time,bid=BidClose,ask=AskClose --out data/market
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    add_data_option(p, "--out")
    p.add_argument(
        "--quotes-only",
        action="store_true",
        help="allow quotes without trade bars: volume 0 and null trade prices in every such row",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the partitions of dates that already have data")
    add_endpoint_option(p)
    add_logging_option(p)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(
        "tthf-ingest", "Convert vendor minute bars to tthf's raw schema (one partition per date).", EPILOG
    )
    formats = p.add_subparsers(dest="format", required=True, metavar="{dbn,csv}")
    d = formats.add_parser("dbn", help="Databento DBN files (bbo-1m/cbbo-1m quotes, ohlcv-1m trades)")
    d.add_argument("inputs", nargs="+", metavar="FILE", help="DBN files or folders of them (local or s3://)")
    d.add_argument("--publisher", type=int, help="keep one venue's records (Databento publisher id)")
    _add_common(d)
    c = formats.add_parser("csv", help="paired CSV minute quote bars and trade bars")
    c.add_argument("--quotes", nargs="+", required=True, metavar="FILE", help="quote-bar files or folders")
    c.add_argument("--trades", nargs="+", default=[], metavar="FILE", help="trade-bar files or folders")
    c.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN[,...]",
        help="the vendor's column for a raw field, e.g. bid=BidClose; ts=Date+Time joins two columns",
    )
    c.add_argument("--map-file", help="a JSON object of field -> column (applied before --map)")
    c.add_argument("--tz", help="time zone of timestamps written without an offset, e.g. America/New_York")
    c.add_argument(
        "--ts-unit",
        choices=("s", "ms", "us", "ns"),
        help="unit of integer epoch timestamps (default: told from their size)",
    )
    c.add_argument("--ts-format", help="strftime format of text timestamps (default: inferred)")
    c.add_argument(
        "--bar-label",
        choices=("start", "end"),
        default="start",
        help="a bar's timestamp is its minute's start (default) or its end",
    )
    c.add_argument("--separator", default=",", help="field separator (default: ',')")
    c.add_argument(
        "--null-value",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a cell text meaning 'no value' besides the empty cell, e.g. NA (repeatable)",
    )
    _add_common(c)
    return p


def _layout(args: argparse.Namespace):  # -> CsvLayout
    from pathlib import Path

    from tthf.engine.data.ingest import CsvLayout, load_mapping, parse_mapping
    from tthf.errors import UsageError

    mapping = {}
    if args.map_file:
        try:
            mapping = load_mapping(Path(args.map_file).read_text(), args.map_file)
        except OSError as exc:
            raise UsageError(f"--map-file {args.map_file}: {exc.strerror or exc}") from exc
    mapping.update(parse_mapping(args.map))
    return CsvLayout(
        mapping=mapping,
        tz=args.tz,
        ts_unit=args.ts_unit,
        ts_format=args.ts_format,
        bar_label=args.bar_label,
        separator=args.separator,
        null_values=tuple(args.null_value),
    )


def print_summary(summary) -> None:  # summary: IngestSummary
    from tthf.engine.data.ingest import DROP_REASONS

    dates = summary.dates
    print(f"{'date':<12}{'rows':>10}{'symbols':>9}")
    for d in dates:
        print(f"{d.date.isoformat():<12}{d.rows:>10,}{d.symbols:>9}")
    print(
        f"\nwrote {len(dates)} date(s) {dates[0].date}..{dates[-1].date} to {summary.out}: {summary.rows:,} rows, "
        f"{summary.symbols} symbols, from {len(summary.inputs)} file(s) in {summary.seconds:.1f}s"
    )
    left = sum(summary.dropped.values())
    print(f"left out: {left:,} rows" + (":" if left else ""))
    for reason, n in sorted(summary.dropped.items(), key=lambda kv: -kv[1]):
        print(f"  {reason:<26}{n:>10,}  {DROP_REASONS.get(reason, '')}")
    for note in summary.notes:
        print(f"note: {note}")


def body(args: argparse.Namespace) -> int:
    from tthf.engine.data.ingest import ingest_csv, ingest_dbn

    out = open_data_from_args(args)
    common = {
        "quotes_only": args.quotes_only,
        "overwrite": args.overwrite,
        "endpoint_url": args.s3_endpoint_url,
        "progress": progress,
    }
    if args.format == "dbn":
        summary = ingest_dbn(args.inputs, out, publisher=args.publisher, **common)
    else:
        summary = ingest_csv(args.quotes, args.trades, out, layout=_layout(args), **common)
    print_summary(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("tthf-ingest", body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

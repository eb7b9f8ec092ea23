"""Quote bars and trade bars of any vendor, joined into raw-schema rows.

Every reader (DBN, CSV) produces two frames in canonical names and types, one per side:

- quotes: ``symbol, ts, bid, ask, bid_size, ask_size, _file``
- trades: ``symbol, ts, open, high, low, close, volume, trade_count, vwap, _file``

``_file`` indexes the reader's list of sources, so a conflict can name its files. They are
joined here, once for every format, so the null policy is the same everywhere: a minute
with a trade bar but no quote keeps null quotes (never forward-filled here: the cleaning
rules decide, per run, how long a quote may be carried), and a minute with a quote but no
trade bar has null trade prices and volume 0 (the trade files list every minute that
traded, so no bar means nothing traded).
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from tthf.engine.data.marketdata import RAW_COLUMNS
from tthf.errors import DataError

KEYS = ("symbol", "ts")
QUOTE_VALUES = ("bid", "ask", "bid_size", "ask_size")
TRADE_PRICES = ("open", "high", "low", "close")
TRADE_VALUES = (*TRADE_PRICES, "volume", "trade_count", "vwap")
TS = pl.Datetime("us", "UTC")
QUOTE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": TS,
    **dict.fromkeys(QUOTE_VALUES, pl.Float64()),
    "_file": pl.Int32(),
}
TRADE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": TS,
    **dict.fromkeys((*TRADE_PRICES, "volume", "vwap"), pl.Float64()),
    "trade_count": pl.Int64(),
    "_file": pl.Int32(),
}

#: why rows were left out; the keys of ``IngestSummary.dropped``
DROP_REASONS = {
    "unmapped_instrument": "DBN records whose instrument id has no symbol in the file's symbol mappings that day",
    "other_publisher": "DBN records of other venues than --publisher",
    "null_key": "rows without a symbol or a timestamp",
    "empty_quote_bar": "quote rows with every quote field empty",
    "empty_trade_bar": "trade rows with every trade field empty",
    "trade_bar_without_volume": "trade bars with prices but no volume (their quote side is kept)",
    "duplicate_quote_rows": "exact duplicates of another quote row",
    "duplicate_trade_rows": "exact duplicates of another trade row",
    "non_trading_day": "rows on weekends and exchange holidays (tthf-run has no session for them)",
}


def _dedupe(frame: pl.DataFrame, side: str, sources: list[str], drops: Counter[str]) -> pl.DataFrame:
    """Drop exact duplicates (counted); two different bars for one symbol and minute are a DataError."""
    if not frame.select(pl.struct(KEYS).is_duplicated().any()).item():
        return frame
    values = [c for c in frame.columns if c != "_file"]
    unique = frame.unique(subset=values, keep="first", maintain_order=True)
    conflict = unique.filter(pl.struct(KEYS).is_duplicated())
    if conflict.height:
        symbol, ts = conflict.row(0)[:2]
        files = conflict.filter((pl.col("symbol") == symbol) & (pl.col("ts") == ts)).get_column("_file").unique()
        where = ", ".join(sources[i] for i in sorted(files.to_list()))
        raise DataError(
            f"{where}: {conflict.height} {side} rows share a (symbol, ts) with different values, e.g. "
            f"symbol={symbol!r} ts={ts.isoformat()}; give each symbol and minute once (one venue, one vendor "
            "file per day) and convert again"
        )
    drops[f"duplicate_{side}_rows"] += frame.height - unique.height
    return unique


def _drop_empty(frame: pl.DataFrame, values: tuple[str, ...], reason: str, drops: Counter[str]) -> pl.DataFrame:
    empty = pl.all_horizontal(pl.col(c).is_null() for c in values)
    drops[reason] += frame.select(empty.sum()).item()
    return frame.filter(~empty)


def _drop_null_keys(frame: pl.DataFrame, drops: Counter[str]) -> pl.DataFrame:
    null_key = pl.col("symbol").is_null() | pl.col("ts").is_null()
    drops["null_key"] += frame.select(null_key.sum()).item()
    return frame.filter(~null_key)


def pair(quotes: pl.DataFrame, trades: pl.DataFrame | None, sources: list[str], drops: Counter[str]) -> pl.DataFrame:
    """Raw-schema rows (RAW_COLUMNS order) from one quote frame and, if given, one trade frame.

    Without trades every row has volume 0 and null trade prices: callers allow that only
    when the user said so (``quotes_only``), since it tells the model nothing traded.
    """
    quotes = _drop_empty(_drop_null_keys(quotes, drops), QUOTE_VALUES, "empty_quote_bar", drops)
    quotes = _dedupe(quotes, "quote", sources, drops).drop("_file")
    if trades is None:
        trades = pl.DataFrame(schema=TRADE_SCHEMA).drop("_file")
    else:
        trades = _drop_empty(_drop_null_keys(trades, drops), TRADE_VALUES, "empty_trade_bar", drops)
        no_volume = pl.col("volume").is_null()
        drops["trade_bar_without_volume"] += trades.select(no_volume.sum()).item()
        trades = _dedupe(trades.filter(~no_volume), "trade", sources, drops).drop("_file")
    joined = quotes.join(trades, on=list(KEYS), how="full", coalesce=True)
    return joined.with_columns(pl.col("volume").fill_null(0.0)).select(RAW_COLUMNS).sort(KEYS)

"""Stage 1, raw data: the trading calendar, date specs, the raw-bar contract and the synthetic market."""

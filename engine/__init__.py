"""The engine: market data, features, the reference model, windows, runs and inference."""

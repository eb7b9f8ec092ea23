"""Console scripts. Each parses its arguments and calls one library function."""

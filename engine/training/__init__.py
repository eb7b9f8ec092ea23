"""Stage 4a, training: the windowed dataset, the fit with purge-gapped splits, held-out metrics."""

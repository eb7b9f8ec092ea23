"""Stage 3, the model: the reference network, its checkpoint format and its interface (inputs, outputs, tolerances)."""

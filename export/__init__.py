"""Export a run's checkpoint to ONNX and TensorRT, validated against the PyTorch reference."""

"""Validation of outside (ONNX) or registry models on each node's own patients (issue 17)."""

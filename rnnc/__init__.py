"""rnnc — a compiler for recurrent neural networks (spec language → ONNX)."""
__version__ = "0.1.0"

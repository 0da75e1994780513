"""Benchmarks and the PyTorch reference of one outer step (not part of the package)."""

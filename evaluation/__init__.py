"""Benchmark harness and results for scld-aug."""

"""Federations for tests, benchmarks, the demo and algorithm authors (real processes)."""

"""Benchmarks: run on demand, never part of `make test`."""

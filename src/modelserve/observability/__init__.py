"""Metrics now; traces and structured logs build on the same registry-passing style."""

"""The load generator behind `modelserve bench` and benchmarks/."""

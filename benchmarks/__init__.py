"""nsjax microbenchmarks: `python -m benchmarks --help`."""

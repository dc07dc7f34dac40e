"""Studies built on the library: discrete vs continuous comparison, one configuration over seeds, and
the benchmarks."""

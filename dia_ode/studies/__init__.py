"""Studies built on the library: discrete vs continuous comparison and the benchmarks."""

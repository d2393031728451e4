"""Benchmarks of the daemon against the engine's own ways, run with `bench/run` (not part of the tests)."""

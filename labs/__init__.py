"""Where analysts experiment: the synthetic world, benchmarks and the `fusion` CLI."""

__all__ = ["bench", "cli", "world"]

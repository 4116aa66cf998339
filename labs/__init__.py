"""Where analysts experiment: the synthetic world, reports, benchmarks and the `fusion` CLI."""

__all__ = ["bench", "cli", "model_report", "report", "scale", "world"]

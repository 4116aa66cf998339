"""The workbench and the composition root: the synthetic world (`world/`) with its ground truth,
the scale curve's inputs (`scale/`), the demo as one function (`demo`), its campaigns
(`demo_campaigns`) and journeys (`demo_journeys`), the benchmarks (`bench/`), and the `fusion`
command (`cli/`), which parses input, calls fusion/ and renders the result."""

__all__ = ["bench", "cli", "demo", "demo_campaigns", "demo_journeys", "scale", "world"]

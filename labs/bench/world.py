"""Benchmark of the synthetic world's generation against its time budget."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from labs.bench.figures import Figure

__all__ = ["WORLD_BUDGET_S", "bench_world"]

WORLD_BUDGET_S = 30.0  # the target for 1M customers


def bench_world(work: Path, *, customers: int = 1_000_000) -> Iterator[Figure]:
    """World generation seconds for 1M customers against the 30 s budget."""
    from labs.world import WorldConfig, generate_world

    out = work / "world-1m"
    start = time.perf_counter()
    summary = generate_world(WorldConfig(customers=customers, seed=1), out)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    yield Figure(
        name="world.generate_1m_s",
        value=seconds,
        unit="s",
        baseline=WORLD_BUDGET_S,
        baseline_name="budget (issue target)",
        ratio=WORLD_BUDGET_S / seconds,
        target="<= 30 s",
        met=seconds <= WORLD_BUDGET_S,
        note=f"{summary.bank_customers:,} customers, {summary.vendor_users:,} vendor users",
    )

"""What a benchmark yields: a figure beside the baseline measured in the same run, and the timer.

A figure is a value, its unit, the baseline measured in the same process on the same inputs,
and their ratio oriented so that > 1 means "better than the baseline" for rates and "faster than
the budget" for times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Benchmark", "Figure", "best_of", "cpu_count"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure with the baseline it is judged against."""

    name: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""


Benchmark = Callable[[Path], Iterator[Figure]]
"""A benchmark: given a scratch folder, yields its figures as they are measured."""


def best_of(
    fn: Callable[[], object], repeats: int, *, setup: Callable[[], object] | None = None
) -> float:
    """Return the shortest wall time of `repeats` calls (the least disturbed run).

    `setup` runs untimed before each call (e.g. `os.sync`, so that one pass's fsync does not
    pay for the write-back of the files the previous pass left dirty).
    """
    best = float("inf")
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_count() -> int:
    """Return the CPUs this process may run on (its affinity where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

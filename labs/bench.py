"""Benchmarks behind `make bench`: each figure is measured beside a baseline in the same run.

A figure is a value, its unit, the baseline measured in the same process on the same inputs,
and their ratio oriented so that > 1 means "better than the baseline" for rates and "faster than
the budget" for times. Results go to `<out>/latest.json` (and a timestamped copy) and print as a
table. Speed is never asserted by unit tests; the targets here are checked and reported.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch, keyed_hash

__all__ = ["BENCHMARKS", "Figure", "run_benchmarks"]


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


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    """Return the shortest wall time of `repeats` calls (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _random_mobiles(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    second = rng.choice(list("3456789"), size=n)
    rest = rng.integers(0, 10**9, size=n)
    return [f"1{s}{r:09d}" for s, r in zip(second, rest, strict=True)]


def bench_keyed_hash(work: Path, *, n: int = 2_000_000) -> Iterator[Figure]:
    """Keyed hashing keys/s against a single-thread hashlib.sha256 loop over the same strings."""
    del work
    phones = _random_mobiles(n, seed=11)
    messages = [f"mobile|{p}" for p in phones]
    series = normalize_phones(pl.Series("phone", phones)).values
    epoch = SaltEpoch.generate("bench")
    sha256 = hashlib.sha256

    def plain() -> None:
        for m in messages:
            sha256(m.encode()).digest()

    baseline = n / _best_of(plain, 2)
    value = n / _best_of(lambda: keyed_hash(series, epoch, domain="mobile"), 3)
    ratio = value / baseline
    yield Figure(
        name="keyed_hash.keys_per_s",
        value=value,
        unit="keys/s",
        baseline=baseline,
        baseline_name="hashlib.sha256 loop, 1 thread, same strings",
        ratio=ratio,
        target=">= 0.9x",
        met=ratio >= 0.9,
        note=f"{n:,} keys; HMAC-SHA256 (2 compressions) vs plain SHA-256 (1)",
    )


def bench_world(work: Path, *, customers: int = 1_000_000) -> Iterator[Figure]:
    """World generation seconds for 1M customers against the 30 s budget."""
    from labs.world import WorldConfig, generate_world

    out = work / "world-1m"
    start = time.perf_counter()
    summary = generate_world(WorldConfig(customers=customers, seed=1), out)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    budget = 30.0
    yield Figure(
        name="world.generate_1m_s",
        value=seconds,
        unit="s",
        baseline=budget,
        baseline_name="budget (issue target)",
        ratio=budget / seconds,
        target="<= 30 s",
        met=seconds <= budget,
        note=f"{summary.bank_customers:,} customers, {summary.vendor_users:,} vendor users",
    )


BENCHMARKS: dict[str, Benchmark] = {
    "keyed_hash": bench_keyed_hash,
    "world": bench_world,
}


def run_benchmarks(
    out: Path,
    *,
    only: tuple[str, ...] = (),
    on_figure: Callable[[Figure], None] | None = None,
) -> list[Figure]:
    """Run the benchmarks (all, or those named in `only`) and write `<out>/latest.json`."""
    names = only or tuple(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        from contracts.errors import ConfigError

        raise ConfigError(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
            setting="only",
        )
    figures: list[Figure] = []
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=out) as tmp:
        for name in names:
            for figure in BENCHMARKS[name](Path(tmp)):
                figures.append(figure)
                if on_figure is not None:
                    on_figure(figure)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "at": stamp,
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "node": "local"},
        "figures": [asdict(f) for f in figures],
    }
    text = json.dumps(document, indent=2)
    (out / "latest.json").write_text(text)
    (out / f"bench-{stamp}.json").write_text(text)
    return figures


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

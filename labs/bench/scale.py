"""Benchmark of the scale curve: the bank's stages at growing sizes, in process and on a cluster.

For each size the inputs come from `labs.scale` (generated once, cached by size and seed, not
timed) and the stages run in a fresh process on each engine of `SCALE_ENGINES`. The figures say
whether time grows near linearly (issue #21: 10M within 10.5x the time of 1M), whether peak
memory stays in budget, and whether both engines find the same matches, features and scores.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from labs.bench.figures import Figure

if TYPE_CHECKING:
    from labs.scale import ScaleRun, ScaleSummary

__all__ = [
    "SCALE_ENGINES",
    "SCALE_LINEAR_SLACK",
    "SCALE_PEAK_BUDGET_GB",
    "SCALE_SIZES",
    "bench_scale",
    "scale_sizes",
]

SCALE_SIZES = (100_000, 1_000_000, 10_000_000)
SCALE_ENGINES = (("in_process", None), ("local2", "local:2"))
SCALE_PEAK_BUDGET_GB = 8.0
# time(10N) <= 10.5x time(N) on both engines: linear with 5% slack (issue #21; issue #8 allowed
# 12x). The issue states it in process; the cluster is held to the same bound, since its per-task
# overhead is a fixed cost that only lowers its ratio.
SCALE_LINEAR_SLACK = 1.05


def _size_label(n: int) -> str:
    """Return a customer count as figure names spell it: 100k, 1m, 10m."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    return f"{n // 1_000}k" if n % 1_000 == 0 else str(n)


def scale_sizes(text: str | None) -> tuple[int, ...]:
    """Return the sizes `fusion bench --scale-sizes` asks for ("100000,1000000"); empty: default."""
    from contracts.errors import ConfigError

    if not text or not text.strip():
        return SCALE_SIZES
    try:
        sizes = tuple(sorted({int(part.replace("_", "")) for part in text.split(",")}))
    except ValueError:
        sizes = ()
    if not sizes or sizes[0] < 100:
        raise ConfigError(
            f"--scale-sizes takes customer counts >= 100 separated by commas (e.g. "
            f"100000,1000000); got {text!r}",
            setting="scale_sizes",
        )
    return sizes


def bench_scale(
    work: Path,
    *,
    sizes: tuple[int, ...] | None = None,
    seed: int = 8,
    cache: Path | None = None,
    progress: bool = True,
) -> Iterator[Figure]:
    """The scale curve: seconds per stage and peak memory at 100k, 1M and 10M customers.

    For each size (vendor 3x, inputs from `labs.scale`: the extract, the vendor's keyed file
    and the bank's encrypted store after the match, generated once and cached by size and seed
    under `cache`, by default `<out>/scale-inputs`, and not timed), the bank's stages run in a
    fresh process on each engine, the in-process one and a LocalCluster of two worker
    processes: bank keying (`key_customers`), vendor key partitioning (`partition_by_key`), the
    PSI join (`join_keys`), the feature build from the store (`build_feature_buckets`, 32
    customer buckets) and batch scoring of the built buckets (`score_features`). Each run's
    peak is the resident memory of its whole process tree, sampled every 0.2 s. Figures: per
    run, total seconds against a linear extrapolation of the next smaller size on the same
    engine, and peak memory against the 8 GB budget; per size, the two engines' matches (count
    and digest of the rows, and of the scores) against each other and the generator's count,
    and the feature build's customers and matched customers against the extract and the join;
    per engine and step in size, the time ratio against 1.05x the size ratio (10.5x from 1M to
    10M, issue #21), and beside it the CPU-time ratio of the process trees, which shows the
    scaling itself when other work on a shared machine stretches the wall time of one run more
    than another's.

    `sizes` defaults to 100k, 1M and 10M (`fusion bench --scale-sizes 100000,1000000` for a
    quick run).
    """
    from rich.console import Console

    from labs.scale import ScaleConfig, measure_scale, scale_inputs

    chosen = sorted(sizes or scale_sizes(None))
    store = cache if cache is not None else work.parent / "scale-inputs"
    console = Console() if progress else None
    runs: dict[tuple[str, int], ScaleRun] = {}
    for at, size in enumerate(chosen):
        inputs = scale_inputs(ScaleConfig(customers=size, seed=seed), store, console=console)
        label = _size_label(size)
        for engine, spec in SCALE_ENGINES:
            folder = work / f"scale-{label}-{engine}"
            try:
                run = measure_scale(inputs, folder, cluster=spec, progress=progress)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            runs[engine, size] = run
            previous = runs.get((engine, chosen[at - 1])) if at else None
            yield from _scale_run_figures(f"scale.{engine}.{label}", run, previous)
        yield _agreement_figure(
            size, runs["in_process", size], runs["local2", size], inputs.summary
        )
    for engine, _ in SCALE_ENGINES:
        for small, large in itertools.pairwise(chosen):
            yield from _growth_figures(
                engine, (small, large), runs[engine, small], runs[engine, large]
            )


def _agreement_figure(
    size: int, alone: ScaleRun, cluster: ScaleRun, summary: ScaleSummary
) -> Figure:
    """The two engines' matches and scores against each other and the generator's count."""
    same_rows = alone.matches_digest == cluster.matches_digest
    same_scores = alone.scores_digest == cluster.scores_digest
    built = (
        alone.featured == cluster.featured == size
        and alone.featured_matched == cluster.featured_matched == alone.matches
    )
    agree = (
        alone.matches == cluster.matches == summary.expected_matches
        and alone.scored == cluster.scored == size
        and same_rows
        and same_scores
        and built
    )
    return Figure(
        name=f"scale.{_size_label(size)}.matches",
        value=float(alone.matches),
        unit="matches",
        baseline=float(cluster.matches),
        baseline_name="LocalCluster(2) on the same inputs",
        ratio=alone.matches / cluster.matches if cluster.matches else None,
        target="the same rows on both engines, as many as the generator made",
        met=agree,
        note=f"generator expects {summary.expected_matches:,} ({size:,} customers, "
        f"{summary.covered:,} at the vendor, {summary.invalid_phones:,} invalid and "
        f"{summary.shared_phones:,} shared phones); match rows "
        f"{'identical' if same_rows else 'DIFFER'} and {alone.scored:,} scores "
        f"{'identical' if same_scores else 'DIFFER'} (customer_id, decile, in order); the "
        f"feature build wrote {alone.featured:,} customers, {alone.featured_matched:,} with "
        f"vendor data ({'as the join found' if built else 'NOT as the join found'}); "
        f"inputs ({(summary.bank_bytes + summary.vendor_bytes) / 1e9:.2f} GB of Parquet, "
        f"{summary.store_bytes / 1e9:.2f} GB of store) generated in {summary.seconds:.0f} s, "
        "not timed",
    )


def _growth_figures(
    engine: str, sizes: tuple[int, int], before: ScaleRun, after: ScaleRun
) -> Iterator[Figure]:
    """Wall-time and CPU-time ratios from one size to the next, against near-linear growth."""
    small, large = sizes
    ratio = after.total_s / before.total_s
    budget = SCALE_LINEAR_SLACK * large / small
    pair = f"{_size_label(large)}_over_{_size_label(small)}"
    stages = ", ".join(
        f"{stage} {after.seconds[stage] / before.seconds[stage]:.1f}x" for stage in after.seconds
    )
    yield Figure(
        name=f"scale.{engine}.time_{pair}",
        value=ratio,
        unit="x",
        baseline=budget,
        baseline_name=f"budget: {SCALE_LINEAR_SLACK:g} x the size ratio (near linear)",
        ratio=budget / ratio,
        target=f"<= {budget:g}x",
        met=ratio <= budget,
        note=f"wall time {after.total_s:.1f} s / {before.total_s:.1f} s; by stage: "
        f"{stages}; load average {before.load:.1f} and {after.load:.1f} as the runs began",
    )
    cpu_before, cpu_after = sum(before.cpu_seconds.values()), sum(after.cpu_seconds.values())
    cpu_stages = ", ".join(
        f"{stage} {after.cpu_seconds[stage] / before.cpu_seconds[stage]:.1f}x"
        for stage in after.cpu_seconds
    )
    yield Figure(
        name=f"scale.{engine}.cpu_{pair}",
        value=cpu_after / cpu_before,
        unit="x",
        baseline=budget,
        baseline_name=f"{SCALE_LINEAR_SLACK:g} x the size ratio (near linear)",
        ratio=budget * cpu_before / cpu_after,
        target="reported",
        met=None,
        note=f"CPU seconds of the runs' process trees (driver, nannies, workers), which "
        f"other work on a shared machine hardly moves: {cpu_after:.0f} / "
        f"{cpu_before:.0f}; by stage: {cpu_stages}",
    )


def _scale_run_figures(name: str, run: ScaleRun, previous: ScaleRun | None) -> Iterator[Figure]:
    """Total seconds (against linear growth from `previous`) and peak memory of one scale run."""
    gb = 1e9
    stages = "; ".join(
        f"{stage} {run.seconds[stage]:.1f} s ({run.cpu_seconds[stage]:.1f} s CPU, "
        f"{run.rows_per_s(stage):,.0f} rows/s, peak {run.stage_peak_rss.get(stage, 0) / gb:.2f} GB)"
        for stage in run.seconds
    )
    linear = None if previous is None else previous.total_s * run.customers / previous.customers
    yield Figure(
        name=f"{name}.total_s",
        value=run.total_s,
        unit="s",
        baseline=linear,
        baseline_name="-"
        if previous is None
        else f"linear from {previous.customers:,} customers ({previous.total_s:.1f} s)",
        ratio=None if linear is None else linear / run.total_s,
        target="reported",
        met=None,
        note=f"{run.customers:,} customers x {run.vendor_users:,} vendor users on {run.engine} "
        f"({run.workers} worker(s), started in {run.startup_s:.1f} s, not counted; load average "
        f"{run.load:.1f} as it began): {stages}; "
        f"{run.matches:,} matches, {run.invalid:,} invalid and {run.duplicated:,} shared phones",
    )
    peak = run.peak_rss / gb
    yield Figure(
        name=f"{name}.peak_rss_gb",
        value=peak,
        unit="GB",
        baseline=SCALE_PEAK_BUDGET_GB,
        baseline_name="budget (issue #8: 8 GB at 10M customers)",
        ratio=SCALE_PEAK_BUDGET_GB / peak if peak else None,
        target=f"<= {SCALE_PEAK_BUDGET_GB:g} GB",
        met=peak <= SCALE_PEAK_BUDGET_GB,
        note="largest sum of RSS over the run's process tree (driver, nannies, workers), "
        "sampled every 0.2 s; pages shared between processes count in each",
    )

"""Run the selected benchmarks, write their figures to `<out>/latest.json`, and tabulate them.

Every figure carries its target and whether it was met; the runner writes all of them (to
`latest.json` and a timestamped copy beside it) whatever they say, and the caller decides what a
missed target means (`fusion bench` exits 1).
"""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from labs.bench.api import bench_api
from labs.bench.campaigns import bench_campaign_plan, bench_outcome_events
from labs.bench.crypto import bench_envelope, bench_keyed_hash
from labs.bench.figures import Benchmark, Figure, cpu_count
from labs.bench.ingest import bench_contracts, bench_ingest
from labs.bench.journeys import bench_journey_day
from labs.bench.matching import bench_oprf, bench_psi
from labs.bench.models import bench_features, bench_models
from labs.bench.monitoring import bench_monitoring
from labs.bench.query import bench_query
from labs.bench.scale import bench_scale
from labs.bench.world import bench_world
from matcher.atomic import write_atomic

__all__ = ["BENCHMARKS", "figures_table", "run_benchmarks"]

BENCHMARKS: dict[str, Benchmark] = {
    "keyed_hash": bench_keyed_hash,
    "world": bench_world,
    "contracts": bench_contracts,
    "envelope": bench_envelope,
    "ingest": bench_ingest,
    "psi": bench_psi,
    "oprf": bench_oprf,
    "features": bench_features,
    "models": bench_models,
    "api": bench_api,
    "query": bench_query,
    "campaign_plan": bench_campaign_plan,
    "outcome_events": bench_outcome_events,
    "journey_day": bench_journey_day,
    "monitoring": bench_monitoring,
    "scale": bench_scale,
}
"""Every benchmark by the name `fusion bench --only` takes, in the order a full run takes them."""


def run_benchmarks(
    out: Path,
    *,
    only: tuple[str, ...] = (),
    on_figure: Callable[[Figure], None] | None = None,
    scale: tuple[int, ...] | None = None,
) -> list[Figure]:
    """Run the benchmarks (all, or those named in `only`) and write `<out>/latest.json`.

    `scale` is the scale curve's customer counts (default: 100k, 1M, 10M). `on_figure` is
    called with each figure as soon as it is measured.
    """
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
    finished: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-", dir=out) as tmp:
            for name in names:
                work = Path(tmp) / name  # a folder each: two benches may use the same file names
                work.mkdir()
                for figure in _measure(name, work, scale):
                    figures.append(figure)
                    if on_figure is not None:
                        on_figure(figure)
                finished.append(name)
    finally:  # a bench that fails keeps the figures measured before it
        _write_results(out, figures, unfinished=[n for n in names if n not in finished])
    return figures


def _measure(name: str, work: Path, scale: tuple[int, ...] | None) -> Iterator[Figure]:
    """Yield the figures of benchmark `name`, measured in the scratch folder `work`."""
    if name == "scale":
        return bench_scale(work, sizes=scale)
    return BENCHMARKS[name](work)


def _write_results(out: Path, figures: Sequence[Figure], *, unfinished: Sequence[str]) -> None:
    """Write the figures to `<out>/latest.json` and to a copy named by the time of writing.

    `unfinished` names the benchmarks asked for that did not finish (the run stopped at the
    first of them); the document lists them only when there are some.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document: dict[str, object] = {
        "at": stamp,
        "machine": {"python": platform.python_version(), "cpus": cpu_count(), "node": "local"},
        "figures": [asdict(f) for f in figures],
    }
    if unfinished:
        document["unfinished"] = list(unfinished)
    text = json.dumps(document, indent=2)
    write_atomic(out / "latest.json", text)
    write_atomic(out / f"bench-{stamp}.json", text)


def figures_table(figures: Sequence[Figure]) -> Table:
    """Return the figures as a rich table: value, baseline, ratio, target and whether it was met."""
    table = Table(title="Benchmarks")
    for column in ("figure", "value", "baseline", "ratio", "target", "met"):
        table.add_column(column)
    for f in figures:
        table.add_row(
            f.name,
            f"{f.value:,.2f} {f.unit}",
            "-" if f.baseline is None else f"{f.baseline:,.2f} ({f.baseline_name})",
            "-" if f.ratio is None else f"{f.ratio:.2f}x",
            f.target,
            {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[f.met],
        )
    return table

"""The workbench's commands: the synthetic world, the whole demo, the benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from contracts.schemas import MatchMode
from labs.cli.options import BenchName, ModeOption
from labs.cli.render import (
    print_lists,
    print_match,
    print_readout,
    print_training,
    print_world,
)
from labs.cli.terminal import console, err_console, stage_progress
from labs.world import WorldConfig, generate_world

if TYPE_CHECKING:
    from labs.demo import DemoSummary
    from labs.demo_campaigns import DemoCampaigns

__all__ = ["bench", "demo", "world"]


def world(
    out: Annotated[Path, typer.Option(help="Folder the world is written to.")] = Path("runs/world"),
    customers: Annotated[int, typer.Option(min=100, help="Bank customers.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same bytes.")] = 7,
) -> None:
    """Generate the synthetic bank + vendor world (ground truth goes to truth/)."""
    with stage_progress("world") as progress:
        summary = generate_world(
            WorldConfig(customers=customers, seed=seed), out, progress=progress
        )
    print_world(summary)
    console.print(f"written to [bold]{out}[/]")


def demo(
    out: Annotated[Path, typer.Option(help="Run folder (ignored by git).")] = Path("runs/demo"),
    customers: Annotated[int, typer.Option(min=100, help="Bank customers in the world.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same run.")] = 7,
    mode: ModeOption = MatchMode.SALTED,
    campaigns: Annotated[
        bool,
        typer.Option(
            "--campaigns/--no-campaigns",
            help="Run the two demo campaigns through every stage to their readouts, then the two "
            "journey strategies over the journey world's 100 days.",
        ),
    ] = True,
) -> None:
    """Run everything that exists end to end on a synthetic world and print a summary.

    world -> bank and vendor keyrings -> vendor pack (normalise, keyed hash or OPRF seal, seal
    the batch) -> bank ingest (verify, open, contract, load into the encrypted store) -> match
    (salted join, or OPRF request -> vendor answer -> open matched rows) -> features -> train
    (acquisition, rescue, uplift) -> score -> target lists per branch -> HTML reports -> two
    campaigns through every stage (simulated clock) to their readouts against control.
    Re-running starts from a clean run.
    """
    from labs.demo import run_demo

    with stage_progress("demo") as progress:
        summary = run_demo(
            out, customers=customers, seed=seed, mode=mode, progress=progress, campaigns=campaigns
        )
    _print_demo(summary)


def _print_demo(summary: DemoSummary) -> None:
    """Print what each step of the demo made, in the order the steps ran."""
    print_world(summary.world)
    packed, bank = summary.pack, summary.bank
    console.print(
        f"vendor batch {packed.batch_id}: {packed.rows:,} rows sealed "
        f"({packed.sealed.bytes / 1e6 if packed.sealed else 0:,.1f} MB); raw phones dropped"
    )
    for outcome in bank.batches:
        split = ", ".join(f"{k} {v:.1f}s" for k, v in outcome.seconds.items())
        console.print(
            f"ingest {outcome.batch_id}: [bold]{outcome.status}[/] {outcome.rows:,} rows ({split})"
        )
    print_match(bank.match)
    features = bank.features.features
    console.print(
        f"features {summary.snapshot_date}: {features.table.height:,} customers x "
        f"{len(features.feature_columns())} fused columns + {features.tags.shape[1]:,} tag "
        f"columns ({features.manifest.matched:,} with vendor data) -> {bank.features.path}"
    )
    print_training(summary.training)
    print_lists(summary.lists, summary.folder.lists)
    if summary.campaigns is not None:
        _print_campaigns(summary.campaigns)
    if summary.journeys is not None:
        from labs.cli.journeys import print_demo_journeys

        print_demo_journeys(summary.journeys)
    console.print(
        f"match and app-penetration report (cells under k=10 suppressed): {bank.match_report}"
    )
    console.print(
        f"model report (acquisition, rescue, uplift, value x demand): {summary.model_report}"
    )
    console.print(
        f"run folder: [bold]{summary.folder.root}[/] (encrypted store {summary.folder.store.name}; "
        f"summary {summary.summary_file})"
    )


def bench(
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("bench/results"),
    only: Annotated[
        list[BenchName] | None, typer.Option(help="Run only these benchmarks (repeat --only).")
    ] = None,
    scale_sizes: Annotated[
        str | None,
        typer.Option(help="The scale curve's customer counts, e.g. 100000,1000000."),
    ] = None,
) -> None:
    """Run the benchmarks, each against a baseline measured in the same run."""
    from labs.bench import Figure, run_benchmarks
    from labs.bench import scale_sizes as parse_sizes
    from labs.bench.runner import figures_table

    def show(f: Figure) -> None:
        console.print(f"  measured {f.name}: {f.value:,.2f} {f.unit}")

    sizes = parse_sizes(scale_sizes) if scale_sizes else None
    figures = run_benchmarks(
        out, only=tuple(name.value for name in only or ()), on_figure=show, scale=sizes
    )
    console.print(figures_table(figures))
    console.print(f"written to [bold]{out / 'latest.json'}[/]")
    missed = [f for f in figures if f.met is False]
    if missed:
        # The figures are written either way; the exit status tells CI or a script.
        for f in missed:
            measured = f"{f.value:,.2f} {f.unit}" + (f", {f.ratio:.2f}x" if f.ratio else "")
            err_console.print(f"[red]target missed:[/] {f.name} {f.target}: {measured}")
        raise typer.Exit(code=1)


def _print_campaigns(ran: DemoCampaigns) -> None:
    """Print the demo campaigns' stage log, each readout, and the world's truth beside it."""
    for line in ran.log:
        console.print(f"  {line}", soft_wrap=True)
    for name, result in ran.readouts.items():
        print_readout(result)
        truth = ran.truth[name]
        measured = result.readout.comparison
        ratio = "n/a" if measured is None else f"{measured.ratio:.2f}x"
        gained = result.readout.incremental.successes
        console.print(
            f"  world's truth for {name}: treated/control {truth.true_ratio:.2f}x (measured "
            f"{ratio}); incremental successes {truth.true_incremental:,.1f} (measured "
            f"{'withheld' if gained is None else f'{gained:,.1f}'})",
            soft_wrap=True,
        )

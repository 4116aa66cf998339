"""The `fusion` command: the one entry point for the demo, the vendor tool and the bank's jobs.

Only this module (and `api/`) reads the environment and prints; everything below it takes typed
arguments. Errors of the platform print their message (which says what to do) and exit 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from contracts.errors import FusionError

__all__ = ["app"]

app = typer.Typer(
    name="fusion",
    help="Privacy-preserving fusion of a data vendor's app/tag data with a bank's customers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@contextmanager
def _stage_progress(title: str) -> Iterator[Callable[[str, float], None]]:
    """Yield a `progress(stage, fraction)` callback drawing one rich bar per stage."""
    with Progress(
        TextColumn(f"[bold]{title}[/] {{task.description}}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, fraction: float) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=1.0)
            progress.update(tasks[stage], completed=min(max(fraction, 0.0), 1.0))

        yield update


def _fail(error: FusionError) -> typer.Exit:
    err_console.print(f"[red]error:[/] {error}")
    return typer.Exit(code=2)


def _print_world_summary(summary: dict[str, object]) -> None:
    table = Table(title="Synthetic world", show_header=False)
    rows = [
        ("bank customers", f"{summary['bank_customers']:,}"),
        ("vendor users", f"{summary['vendor_users']:,}"),
        ("true coverage", f"{float(summary['true_coverage']):.1%}"),  # type: ignore[arg-type]
        ("label rate (opens mobile banking)", f"{float(summary['label_rate']):.2%}"),  # type: ignore[arg-type]
        ("invalid / duplicated phones", f"{summary['invalid_phones']:,} / {summary['duplicated_phones']:,}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    mix = summary.get("persona_mix", {})
    if isinstance(mix, dict):
        table.add_row(
            "persona mix (vendor)",
            ", ".join(f"{p} {float(s):.0%}" for p, s in sorted(mix.items(), key=lambda x: -x[1])),
        )
    table.add_row("seconds", f"{float(summary.get('seconds', 0.0)):.1f}")  # type: ignore[arg-type]
    console.print(table)


@app.command()
def world(
    out: Annotated[Path, typer.Option(help="Folder the world is written to.")] = Path("runs/world"),
    customers: Annotated[int, typer.Option(min=100, help="Bank customers.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same bytes.")] = 7,
) -> None:
    """Generate the synthetic bank + vendor world (ground truth goes to truth/)."""
    from labs.world import WorldConfig, generate_world

    try:
        with _stage_progress("world") as progress:
            summary = generate_world(
                WorldConfig(customers=customers, seed=seed), out, progress=progress
            )
    except FusionError as error:
        raise _fail(error) from error
    _print_world_summary(summary.to_dict())
    console.print(f"written to [bold]{out}[/]")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder (ignored by git).")] = Path("runs/demo"),
    customers: Annotated[int, typer.Option(min=100)] = 100_000,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """Run everything that exists end to end on a synthetic world and print a summary."""
    from labs.world import WorldConfig, generate_world

    try:
        with _stage_progress("world") as progress:
            summary = generate_world(
                WorldConfig(customers=customers, seed=seed), out / "world", progress=progress
            )
    except FusionError as error:
        raise _fail(error) from error
    _print_world_summary(summary.to_dict())
    (out / "demo-summary.json").write_text(json.dumps({"world": summary.to_dict()}, indent=2))
    console.print(f"run folder: [bold]{out}[/] (summary in {out / 'demo-summary.json'})")


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("bench/results"),
    only: Annotated[list[str] | None, typer.Option(help="Run only these benchmarks.")] = None,
) -> None:
    """Run the benchmarks, each against a baseline measured in the same run."""
    from labs.bench import Figure, run_benchmarks

    table = Table(title="Benchmarks")
    for column in ("figure", "value", "baseline", "ratio", "target", "met"):
        table.add_column(column)

    def show(f: Figure) -> None:
        console.print(f"  measured {f.name}: {f.value:,.2f} {f.unit}")
        table.add_row(
            f.name,
            f"{f.value:,.2f} {f.unit}",
            "-" if f.baseline is None else f"{f.baseline:,.2f} ({f.baseline_name})",
            "-" if f.ratio is None else f"{f.ratio:.2f}x",
            f.target,
            {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[f.met],
        )

    try:
        run_benchmarks(out, only=tuple(only or ()), on_figure=show)
    except FusionError as error:
        raise _fail(error) from error
    console.print(table)
    console.print(f"written to [bold]{out / 'latest.json'}[/]")


def main() -> None:  # pragma: no cover - console entry for `python -m labs.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()

"""Where the `fusion` command writes: the consoles, the progress bars, the one error exit.

A platform error (`FusionError`) raised by a command prints its message, which says what to do,
on stderr and exits 2; `exits_on_error` is the one place that turns one into the other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from contracts.errors import FusionError
from fusion.progress import Progress

__all__ = ["console", "err_console", "exits_on_error", "stage_progress"]

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)


def exits_on_error(command: Callable[P, R]) -> Callable[P, R]:
    """Return `command` printing a FusionError's message and exiting 2 instead of raising it.

    The wrapper keeps the command's signature, so typer reads its options as before.
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except FusionError as error:
            err_console.print(f"[red]error:[/] {error}")
            raise typer.Exit(code=2) from error

    return run


@contextmanager
def stage_progress(title: str) -> Iterator[Progress]:
    """Yield a `progress(stage, fraction)` callback drawing one rich bar per stage."""
    with RichProgress(
        TextColumn(f"[bold]{title}[/] {{task.description}}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, fraction: float) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=1.0)
            bars.update(tasks[stage], completed=min(max(fraction, 0.0), 1.0))

        yield update

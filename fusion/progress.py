"""Progress reporting: the one callback type long jobs take, and the rich bar the CLI shows.

A long job takes `progress: Progress | None` and calls it with a stage name and the fraction done
(0.0 to 1.0); the command line renders it. Jobs that count steps instead (bucketed jobs) use
`progress_bar`, which draws nothing without a console.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

__all__ = ["Progress", "progress_bar", "report_to"]

Progress = Callable[[str, float], None]
"""A job's progress callback: (stage, fraction done in [0, 1])."""


def report_to(progress: Progress | None) -> Progress:
    """Return `progress`, or a callback that ignores every report."""
    return progress or (lambda stage, fraction: None)


@contextmanager
def progress_bar(console: Console | None, stage: str, total: int) -> Iterator[Callable[[], None]]:
    """Yield a callable that advances the stage's progress bar by one step (no bar: no console)."""
    if console is None:
        yield lambda: None
        return
    columns = (
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with RichProgress(*columns, console=console) as bar:
        task = bar.add_task(stage, total=total)
        yield lambda: bar.advance(task)

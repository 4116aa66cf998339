"""The analyst's command: SQL on the store, read-only (one query, or an interactive prompt)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import typer
from rich.markup import escape

from labs.cli.options import DEFAULT_RUN, RunOption, bank_of
from labs.cli.terminal import console, err_console, exits_on_error

__all__ = ["sql"]


@exits_on_error
def sql(
    query: Annotated[str | None, typer.Argument(help="One query; none = interactive.")] = None,
    run: RunOption = DEFAULT_RUN,
    limit: Annotated[int, typer.Option(help="Rows to print at most.")] = 50,
) -> None:
    """Query the store read-only (close any writer first; analysts use published snapshots).

    Exit status: 0 answered; 2 the query failed (one query given). At the interactive prompt a
    failed query is reported and the next one read; the session ends with 0.
    """
    with bank_of(run, read_only=True) as bank:
        for text in [query] if query else _prompt_queries():
            try:
                frame = bank.store.execute(text).pl()
            except Exception as error:  # the analyst's SQL: say why, then stop or read the next
                err_console.print(
                    f"[red]query failed:[/] {type(error).__name__}: {escape(str(error))}"
                )
                if query:
                    raise typer.Exit(code=2) from error
                continue
            console.print(frame.head(limit))


def _prompt_queries() -> Iterator[str]:
    while True:
        try:
            line = console.input("[bold]fusion sql>[/] ").strip()
        except EOFError:
            return
        if line in {"", "\\q", "quit", "exit"}:
            if line:
                return
            continue
        yield line

"""The analyst's command: SQL on the store, read-only (one query, or an interactive prompt)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import polars as pl
import typer
from rich.markup import escape

from labs.cli.options import DEFAULT_RUN, RunOption, bank_of
from labs.cli.terminal import EXIT_USAGE, console, err_console

__all__ = ["sql"]


def sql(
    query: Annotated[
        str | None,
        typer.Argument(
            help="SQL; several statements separated by ';' run in turn. None: a prompt."
        ),
    ] = None,
    run: RunOption = DEFAULT_RUN,
    limit: Annotated[
        int, typer.Option(min=1, help="Rows to print at most per statement (the total is said).")
    ] = 50,
) -> None:
    """Query the store read-only (close any writer first; analysts use published snapshots).

    Exit status: 0 answered; 2 a statement failed (a query given: the statements after it do
    not run). At the interactive prompt a failed query is reported and the next one read; the
    session ends with 0.
    """
    with bank_of(run, read_only=True) as bank:
        for text in [query] if query else _prompt_queries():
            try:
                for statement in bank.store.connection.extract_statements(text):
                    _print_result(bank.store.execute(statement.query).pl(), limit)
            except Exception as error:  # the analyst's SQL: say why, then stop or read the next
                err_console.print(
                    f"[red]query failed:[/] {type(error).__name__}: {escape(str(error))}"
                )
                if query:
                    raise typer.Exit(code=EXIT_USAGE) from error


def _print_result(frame: pl.DataFrame, limit: int) -> None:
    console.print(frame.head(limit))
    if frame.height > limit:
        console.print(f"{limit:,} of {frame.height:,} rows shown (--limit)")


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

"""Where the `fusion` command writes: the consoles, the progress bars, the one error exit.

Every command's errors leave through `FusionCommands.invoke`, the root group of the command
line, so no command handles them itself. Exit status, the same for every command:

    0  done
    1  done, with findings (a refused batch, a match of nobody, a missed bench target...)
    2  usage or input error: a platform error (`FusionError`, whose message says what to do) or
       an OS error the user caused (a missing file, a folder for a file, a read-only folder, a
       port in use), printed as one line
    3  an unexpected error (a bug): one line pointing to a crash report; the full traceback is
       printed with --log-level DEBUG

Neither the one line nor the crash report quotes the exception's text for unexpected errors:
library messages can quote the values of a row, and a row can hold a phone number.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.text import Text
from typer.core import TyperGroup

from contracts.errors import FusionError
from fusion.progress import Progress

__all__ = [
    "EXIT_BUG",
    "EXIT_FINDINGS",
    "EXIT_USAGE",
    "FusionCommands",
    "console",
    "err_console",
    "os_error_message",
    "print_finding",
    "stage_progress",
]

EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_BUG = 3

console = Console()
err_console = Console(stderr=True)


class FusionCommands(TyperGroup):
    """The root command group: turns every command's error into one line and an exit status."""

    # click's Context in both methods: typer keeps its copy of click private.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["fusion.command"] = self._command_words(ctx.command_path, args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own exits and usage errors print themselves
        except Exception as error:  # the one place every command's error ends
            command = ctx.meta.get("fusion.command", ctx.command_path)
            raise typer.Exit(code=_report(error, command)) from error

    def _command_words(self, root: str, args: list[str]) -> str:
        """Return the command the arguments name ("fusion vendor pack"), without its options."""
        words, group = [root], self
        for arg in args:
            sub = getattr(group, "commands", {}).get(arg)
            if sub is None:
                continue
            words.append(arg)
            group = sub
        return " ".join(words)


def _report(error: Exception, command: str) -> int:
    """Print `error` as one line on stderr and return the exit status it deserves."""
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    if debug:
        err_console.print_exception(show_locals=False)
    if isinstance(error, FusionError):
        err_console.print(f"[red]error:[/] {error}", soft_wrap=True)
        return EXIT_USAGE
    if isinstance(error, OSError):
        err_console.print(f"[red]error:[/] {os_error_message(error)}", soft_wrap=True)
        return EXIT_USAGE
    report = _crash_report(error, command)
    err_console.print(
        f"[red]error:[/] unexpected {type(error).__name__} in `{command}` (a fault of the "
        f"platform, not of your input); the crash report is {report}: send it to the "
        "platform's maintainers"
        + ("" if debug else "; rerun with --log-level DEBUG for the full traceback"),
        soft_wrap=True,
    )
    return EXIT_BUG


def os_error_message(error: OSError) -> str:
    """Return what an OS error the user caused means, and what to do about it."""
    name = error.filename
    if isinstance(error, FileNotFoundError):
        return f"there is no file or folder {name}: check the path"
    if isinstance(error, IsADirectoryError):
        return f"{name} is a folder where a file was expected: give a file path"
    if isinstance(error, NotADirectoryError):
        return f"{name}: part of this path is a file where a folder was expected"
    if isinstance(error, PermissionError):
        return (
            f"permission denied on {name}: choose a file or folder this account may use, or "
            "change its permissions"
        )
    if isinstance(error, FileExistsError):
        return f"{name} already exists: move it away or choose another path"
    if error.errno == errno.EADDRINUSE:
        return (
            "the address is in use (another server holds the port): stop it or choose "
            "another --port"
        )
    if error.errno == errno.ENOSPC:
        return f"no space left on the device of {name}: free some space or choose another folder"
    if error.errno == errno.EROFS:
        return f"{name} is on a read-only file system: choose a folder you can write"
    return f"{error.strerror or type(error).__name__}: {name}" if name else str(error)


def _crash_report(error: Exception, command: str) -> Path:
    """Write where an unexpected error happened to a 0600 file; return its path.

    The report holds the command, the versions and the stack (files, lines, functions), never
    the exception's text or local values.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    fd, name = tempfile.mkstemp(prefix=f"fusion-crash-{stamp}-", suffix=".txt")
    frames = traceback.extract_tb(error.__traceback__)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"command: {command}\nerror: {type(error).__module__}.{type(error).__name__}\n")
        out.write(f"python: {sys.version.split()[0]} on {platform.platform()}\n\nstack:\n")
        out.writelines(f"  {f.filename}:{f.lineno} in {f.name}\n" for f in frames)
    return Path(name)


def print_finding(message: str) -> None:
    """Print one finding on stderr (the command did its work, but something needs a look;
    the command then exits 1)."""
    err_console.print(Text.assemble(("finding:", "yellow"), f" {message}"), soft_wrap=True)


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

"""The `fusion` command as the CLI tests run it: one invocation on a run folder, its first line."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from labs.cli import app

__all__ = ["first_line", "fusion"]

_runner = CliRunner()


def fusion(run: Path, *args: str) -> Result:
    """Return the result of `fusion <args> --run <run>`."""
    return _runner.invoke(app, [*args, "--run", str(run)])


def first_line(text: str) -> str:
    """Return the first non-blank line of `text` ('' when there is none)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""

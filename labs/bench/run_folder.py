"""The run folder a benchmark serves: a demo run, trained, scored and published."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusion.runfolder import RunFolder

__all__ = ["demo_run_folder"]


def demo_run_folder(run: Path, *, customers: int, seed: int) -> RunFolder:
    """Return the run folder of a demo of `customers` from `seed`, published for serving.

    Raises RuntimeError with the command's output when a step fails.
    """
    # replaced by labs.demo.run_demo at integration: until then the demo's steps live only in
    # the CLI's commands, so this (alone in labs/bench/) runs them through the CLI.
    from typer.testing import CliRunner

    from fusion.runfolder import RunFolder
    from labs.cli import app as cli

    for args in (
        ["demo", "--out", str(run), "--customers", str(customers), "--seed", str(seed)],
        ["publish", "--run", str(run)],
    ):
        result = CliRunner().invoke(cli, args)
        if result.exit_code != 0:
            failure = f"fusion {args[0]} failed:\n{result.output[-3000:]}"
            raise RuntimeError(failure) from result.exception
    return RunFolder(run)

"""Run folders built once per test run and shared by every module and xdist worker that asks.

A demo run takes seconds to build; several modules need the same one. The first worker to ask
builds it in the run's shared temporary folder under a file lock, the others wait for it and use
the same folder. Users never change a shared run: they work on a copy (`copy_of`).
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = ["copy_of", "shared_run", "small_demo"]


def shared_run(
    tmp_path_factory: pytest.TempPathFactory,
    worker_id: str,
    name: str,
    build: Callable[[Path], str],
) -> tuple[Path, str]:
    """Return the run folder `name` and what `build(folder)` returned (e.g. the command output),
    built once per test run whichever worker asks first."""
    if worker_id == "master":
        run = tmp_path_factory.mktemp(name) / "run"
        return run, build(run)
    shared = tmp_path_factory.getbasetemp().parent  # one folder per test run, every worker's
    run, output = shared / name, shared / f"{name}.output"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not output.exists():
            shutil.rmtree(run, ignore_errors=True)
            text = build(run)
            output.write_text(text)  # written last: it marks the run as whole
    return run, output.read_text()


def copy_of(run: Path, to: Path) -> Path:
    """Return a copy of `run` at `to`, for a test that changes it."""
    shutil.copytree(run, to, symlinks=True)
    return to


def small_demo(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Path, str]:
    """Return the shared `fusion demo` run of a 3k world (seed 5, no campaigns) and its output."""
    from typer.testing import CliRunner

    from labs.cli import app

    def build(run: Path) -> str:
        args = ["demo", "--out", str(run), "--customers", "3000", "--seed", "5", "--no-campaigns"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return result.output

    return shared_run(tmp_path_factory, worker_id, "small-demo-run", build)

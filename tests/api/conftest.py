"""A real run folder (demo world, trained models, lists, published snapshots) and a real
uvicorn server on 127.0.0.1 serving a copy of it, with one token per role."""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labs.cli import app as cli
from tests.support.server import ServedRun, serve_copy


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """`fusion demo` on a 6k world, then `fusion publish`: the folder the service serves.

    Built once per test run: with two xdist workers, the first builds it in the run's shared
    temporary folder under a file lock and the other waits for it (tests only ever serve a copy).
    """
    if worker_id == "master":
        return _built(tmp_path_factory.mktemp("api") / "run")
    shared = tmp_path_factory.getbasetemp().parent  # one folder per test run, every worker's
    with (shared / "api-demo-run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run, built = shared / "api-demo-run", shared / "api-demo-run.built"
        if not built.exists():
            shutil.rmtree(run, ignore_errors=True)
            _built(run)
            built.touch()
    return run


def _built(run: Path) -> Path:
    """Return `run` after `fusion demo` (6k customers, no campaigns) and `fusion publish`."""
    runner = CliRunner()
    result = runner.invoke(
        cli, ["demo", "--out", str(run), "--customers", "6000", "--seed", "4", "--no-campaigns"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["publish", "--run", str(run)])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="session")
def served(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRun]:
    """The demo run copied (tests may write to it) and served, tokens issued before start."""
    with serve_copy(demo_run, tmp_path_factory.mktemp("served"), max_upload_bytes=64 << 20) as run:
        yield run

"""A real run folder (demo world, trained models, lists, published snapshots) and a real
uvicorn server on 127.0.0.1 serving a copy of it, with one token per role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labs.cli import app as cli
from tests.support.server import ServedRun, serve_copy
from tests.support.shared_runs import shared_run


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """`fusion demo` on a 6k world, then `fusion publish`: the folder the service serves.

    Built once per test run (`shared_run`); tests only ever serve a copy.
    """
    return shared_run(tmp_path_factory, worker_id, "api-demo-run", _built)[0]


def _built(run: Path) -> str:
    """Build `run` by `fusion demo` (6k customers, no campaigns) and `fusion publish`."""
    runner = CliRunner()
    result = runner.invoke(
        cli, ["demo", "--out", str(run), "--customers", "6000", "--seed", "4", "--no-campaigns"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["publish", "--run", str(run)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="session")
def served(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRun]:
    """The demo run copied (tests may write to it) and served, tokens issued before start."""
    with serve_copy(demo_run, tmp_path_factory.mktemp("served"), max_upload_bytes=64 << 20) as run:
        yield run

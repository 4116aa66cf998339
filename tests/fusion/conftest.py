"""Fixtures the fusion tests share: a trained world, a LocalCluster, a DuckDB extension folder."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusion.jobs import ClusterEngine, Engine, InProcessEngine
from tests.support.models import ModelWorld, train_model_world
from tests.support.shared_runs import shared_run


@pytest.fixture(scope="session")
def model_world(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> ModelWorld:
    """A 12k-customer world through the real pipeline, every model trained once (fast settings).

    Trained once per test run whichever xdist worker asks first (`shared_run`), then pickled
    beside its files: the other worker loads the same objects instead of training again. Tests
    only read it (its registry and files are shared).
    """

    def build(root: Path) -> str:
        root.mkdir(parents=True, exist_ok=True)
        world = train_model_world(root)
        (root / "model-world.pickle").write_bytes(pickle.dumps(world))
        return "trained"

    root, _ = shared_run(tmp_path_factory, worker_id, "model-world", build)
    loaded: ModelWorld = pickle.loads((root / "model-world.pickle").read_bytes())
    return loaded


@pytest.fixture(scope="session")
def ext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DuckDB extension folder for the session, so httpfs is copied in once."""
    return tmp_path_factory.mktemp("duckdb-extensions")


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterEngine]:
    """One LocalCluster of two single-thread worker processes, TLS on, for every fusion module
    of the (xdist worker's) session: starting one and warming its workers costs seconds, and
    every test leaves it with its two workers and no plugin of its own.

    Session, not package or module scope: under `--dist loadscope` a worker's modules of one
    package are interleaved with others', and pytest tears a package fixture down at each switch.
    Its client stays the process's default Dask client until the session ends: tests/labs/
    test_cli.py, whose CLI runs must find no other client in the process, runs before any fusion
    module (HEAVY_FIRST in tests/conftest.py).
    """
    engine = ClusterEngine.start_local(2)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(params=["in-process", "local-cluster"])
def engine(request: pytest.FixtureRequest) -> Engine:
    if request.param == "in-process":
        return InProcessEngine()
    return request.getfixturevalue("cluster")

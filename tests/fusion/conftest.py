"""Fixtures the fusion tests share: a trained world, a LocalCluster, a DuckDB extension folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fusion.jobs import ClusterEngine, Engine, InProcessEngine
from tests.support.models import ModelWorld, train_model_world


@pytest.fixture(scope="session")
def model_world(tmp_path_factory: pytest.TempPathFactory) -> ModelWorld:
    """A 12k-customer world through the real pipeline, every model trained once (fast settings)."""
    return train_model_world(tmp_path_factory.mktemp("model-world"))


@pytest.fixture(scope="session")
def ext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DuckDB extension folder for the session, so httpfs is copied in once."""
    return tmp_path_factory.mktemp("duckdb-extensions")


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterEngine]:
    """One LocalCluster of two single-thread worker processes, TLS on, for the module."""
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

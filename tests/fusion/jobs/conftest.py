"""Fixtures of the bucketed-job tests: one LocalCluster and one small world for the package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fusion.jobs import ClusterEngine
from tests.support.job_worlds import EngineWorld, engine_world


@pytest.fixture(scope="package")
def cluster() -> Iterator[ClusterEngine]:
    """One LocalCluster of two single-thread worker processes, TLS on, for the package.

    Overrides the per-module cluster of tests/fusion: starting one costs seconds, and every
    test here leaves it with its two workers and no plugin of its own.
    """
    engine = ClusterEngine.start_local(2)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="package")
def ew(tmp_path_factory: pytest.TempPathFactory) -> EngineWorld:
    """A 3,000-customer world through the real pipeline, its vendor batch and a model."""
    return engine_world(tmp_path_factory.mktemp("engine-world"))

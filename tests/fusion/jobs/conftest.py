"""Fixtures of the bucketed-job tests: one small world (the LocalCluster is tests/fusion's)."""

from __future__ import annotations

import pytest

from tests.support.job_worlds import EngineWorld, engine_world


@pytest.fixture(scope="session")
def ew(tmp_path_factory: pytest.TempPathFactory) -> EngineWorld:
    """A 3,000-customer world through the real pipeline, its vendor batch and a model.

    Session scope (the package's modules only ask for it): under `--dist loadscope` a worker's
    modules of this package are interleaved with others', and a package fixture is torn down at
    each switch and built again.
    """
    return engine_world(tmp_path_factory.mktemp("engine-world"))

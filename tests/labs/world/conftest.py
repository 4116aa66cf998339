"""One world of 20,000 customers, generated once for every test of the world's modules.

Session scope (only this package's modules ask for it): under `--dist loadscope` an xdist
worker's modules of this package are interleaved with other packages', and pytest tears a package
fixture down at each switch, so the world was generated again for nearly every module.
"""

from __future__ import annotations

import polars as pl
import pytest

from labs.world import WorldConfig, WorldFiles, WorldSummary, generate_world, load_world


@pytest.fixture(scope="session")
def world_config() -> WorldConfig:
    return WorldConfig(customers=20_000, seed=5)


@pytest.fixture(scope="session")
def world(
    tmp_path_factory: pytest.TempPathFactory, world_config: WorldConfig
) -> tuple[WorldFiles, WorldSummary]:
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(world_config, out)
    return load_world(out), summary


@pytest.fixture(scope="session")
def customers(world: tuple[WorldFiles, WorldSummary]) -> pl.DataFrame:
    return pl.read_parquet(world[0].customers)


@pytest.fixture(scope="session")
def vendor(world: tuple[WorldFiles, WorldSummary]) -> pl.DataFrame:
    return pl.read_parquet(world[0].vendor_users)

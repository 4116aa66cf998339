"""One world of 20,000 customers, generated once for every test of the world's modules."""

from __future__ import annotations

import polars as pl
import pytest

from labs.world import WorldConfig, WorldFiles, WorldSummary, generate_world, load_world


@pytest.fixture(scope="package")
def world_config() -> WorldConfig:
    return WorldConfig(customers=20_000, seed=5)


@pytest.fixture(scope="package")
def world(
    tmp_path_factory: pytest.TempPathFactory, world_config: WorldConfig
) -> tuple[WorldFiles, WorldSummary]:
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(world_config, out)
    return load_world(out), summary


@pytest.fixture(scope="package")
def customers(world: tuple[WorldFiles, WorldSummary]) -> pl.DataFrame:
    return pl.read_parquet(world[0].customers)


@pytest.fixture(scope="package")
def vendor(world: tuple[WorldFiles, WorldSummary]) -> pl.DataFrame:
    return pl.read_parquet(world[0].vendor_users)

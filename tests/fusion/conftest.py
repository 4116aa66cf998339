"""Fixtures shared by the fusion tests: one small world trained once; a LocalCluster per module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fusion.features import FeatureSet
from fusion.jobs import ClusterEngine, Engine, InProcessEngine
from fusion.models.acquisition import AcquisitionConfig
from fusion.models.booster import UPLIFT_BOOSTER, BoosterConfig
from fusion.models.campaign import UpliftConfig
from fusion.models.classifier import PruneConfig
from fusion.models.rescue import RescueConfig
from fusion.registry import Registry
from fusion.training import TrainingConfig, TrainingRun, train_all
from labs.world import WorldFiles
from tests.factories import world_features

TRAINED_AT = datetime(2026, 10, 2, 8, 30, tzinfo=UTC)
FAST_ACQUISITION = AcquisitionConfig(
    boost=BoosterConfig(learning_rate=0.1, n_estimators=120, early_stopping_rounds=15),
    prune=PruneConfig(folds=3, rounds=30, min_folds=2),
    tag_profile_k=8,
)
FAST = TrainingConfig(
    acquisition=FAST_ACQUISITION,
    rescue=RescueConfig(training=FAST_ACQUISITION),
    uplift=UpliftConfig(
        params=replace(
            UPLIFT_BOOSTER,
            n_estimators=80,
            max_depth=3,
            learning_rate=0.1,
            min_child_weight=10.0,
            seed=7,
        ),
        tag_profile_k=8,
    ),
)


@dataclass(frozen=True)
class ModelWorld:
    features: FeatureSet
    world: WorldFiles
    campaign: pl.DataFrame
    true_uplift: np.ndarray
    run: TrainingRun
    registry: Registry


@pytest.fixture(scope="session")
def model_world(tmp_path_factory: pytest.TempPathFactory) -> ModelWorld:
    """A 12k-customer world through the real pipeline, every model trained once (fast settings)."""
    root = tmp_path_factory.mktemp("model-world")
    features, world = world_features(root, customers=12_000, seed=3)
    campaign = pl.read_parquet(world.campaign)
    truth = pl.read_parquet(world.propensity, columns=["customer_id", "uplift"])
    true_uplift = (
        features.table.select("customer_id")
        .join(truth, on="customer_id", how="left", maintain_order="left")["uplift"]
        .to_numpy()
    )
    registry = Registry(root / "models")
    run = train_all(
        features,
        campaign=campaign,
        registry=registry,
        now=TRAINED_AT,
        config=FAST,
        true_uplift=true_uplift,
    )
    return ModelWorld(features, world, campaign, true_uplift, run, registry)


@pytest.fixture
def world_root(model_world: ModelWorld) -> Path:
    return model_world.world.root


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

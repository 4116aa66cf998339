"""One small world with every model trained on it (fast settings), as the model tests share it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from fusion.features import FeatureSet
from fusion.models.acquisition import AcquisitionConfig
from fusion.models.booster import UPLIFT_BOOSTER, BoosterConfig
from fusion.models.campaign import UpliftConfig
from fusion.models.classifier import PruneConfig
from fusion.models.rescue import RescueConfig
from fusion.registry import Registry
from fusion.training import TrainingConfig, TrainingRun, train_all
from labs.world import WorldFiles
from tests.support.factories import world_features

__all__ = [
    "FAST",
    "FAST_ACQUISITION",
    "TRAINED_AT",
    "ModelWorld",
    "rare_trial",
    "train_model_world",
]

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
    """A world's features and files, its campaign and true uplift, and the models trained on it."""

    features: FeatureSet
    world: WorldFiles
    campaign: pl.DataFrame
    true_uplift: np.ndarray
    run: TrainingRun
    registry: Registry


def train_model_world(root: Path) -> ModelWorld:
    """Return a 12k-customer world built through the real pipeline, every model trained (FAST)."""
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


def rare_trial(
    n: int, seed: int, *, base: float, effect: float, treated_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (X, y, treatment, true uplift) of a trial that is not the world's: six normal
    features; x0 drives who converts anyway (about `base` of the control), x1 > -0.5 who is
    swayed, by `effect` times how far above -0.5 (0: no effect anywhere); the rest is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    t = (rng.random(n) < treated_share).astype(np.float64)
    p_control = base * np.exp(0.5 * x[:, 0] - 0.125)
    tau = effect * np.clip(x[:, 1] + 0.5, 0.0, None)
    y = (rng.random(n) < np.clip(p_control + t * tau, 0.0, 1.0)).astype(np.float64)
    return x, y, t, tau

"""Rescue: re-score the customers the in-bank model rejected, with the vendor's data.

The real case: a bank re-mined the customers its own model had written off, with internet data,
and the rescued list answered at 3.3% against 0.6% for a control group (5.5x). Here:

1. The in-bank acquisition model scores the whole population; it accepts its top `accept_share`
   (default 30%, a typical campaign's reach) and rejects the rest: the rejected pool.
2. A rescue model on fused features is trained on the pool's training rows (same customer split
   as every other model), so it learns what separates responders among people the bank's own
   data calls unpromising. The accepted customers' training rows join at a lower weight
   (`accepted_weight`, default 0.25; 0 trains on the pool alone): the pool dominates the loss,
   while the accepted rows still show what vendor signals mean. Measured on the 100k demo world
   against the same random control: pool alone 3.4x, weight 0.25 3.6x, weight 1 3.9x.
3. Judged on the pool's held-out rows: the rescued list is the top `top_share` of the pool by
   rescue score; the control is a random sample of the same size drawn from the whole held-out
   pool, independent of any score, as a campaign's hold-out group would be. The response is the
   label (opened mobile banking in the window). The report gives both rates, their difference
   and their ratio, each with a 95% CI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.errors import ConfigError
from fusion.features import FUSED, FeatureSet
from fusion.models.acquisition import (
    LABEL,
    AcquisitionConfig,
    TrainedModel,
    population,
    train_scorer,
)
from fusion.models.design import design_matrix
from fusion.models.metrics import DiffResult, two_proportion_diff

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["RescueConfig", "RescueResult", "train_rescue"]

Progress = Callable[[str, float], None]


@dataclass(frozen=True, kw_only=True)
class RescueConfig:
    """Who counts as rejected, how long the rescued list is, and how the model is trained."""

    accept_share: float = 0.30  # the in-bank model's accepted share; the rest is rejected
    accepted_weight: float = 0.25  # weight of accepted customers' rows in training (pool: 1)
    top_share: float = 0.10  # the rescued list: this share of the held-out pool
    seed: int = 7  # draws the random control
    training: AcquisitionConfig = field(default_factory=AcquisitionConfig)

    def __post_init__(self) -> None:
        for name in ("accept_share", "top_share"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"{name} must be in (0, 1), got {value}", setting=name)
        if not 0 <= self.accepted_weight <= 1:
            raise ConfigError(
                f"accepted_weight must be in [0, 1] (0: train on the pool alone), got "
                f"{self.accepted_weight}",
                setting="accepted_weight",
            )


@dataclass
class RescueResult:
    """The rescue model and its campaign-style test against a random control from the pool."""

    model: TrainedModel
    cutoff: float  # in-bank score below which a customer is rejected
    pool: int  # rejected customers in the population
    pool_test: int  # of them in the held-out split
    rescued: int
    rescued_responders: int
    control: int
    control_responders: int
    test: DiffResult  # rescued minus control, with the ratio and both CIs

    @property
    def rescued_rate(self) -> float:
        return self.rescued_responders / self.rescued

    @property
    def control_rate(self) -> float:
        return self.control_responders / self.control

    def summary(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff,
            "pool": self.pool,
            "pool_test": self.pool_test,
            "rescued": self.rescued,
            "rescued_rate": self.rescued_rate,
            "control": self.control,
            "control_rate": self.control_rate,
            "diff": self.test.diff,
            "diff_ci": [self.test.ci_low, self.test.ci_high],
            "ratio": self.test.ratio,
            "ratio_ci": [self.test.ratio_ci_low, self.test.ratio_ci_high],
            "p_value": self.test.p_value,
            "auc_in_pool": self.model.evaluation.auc,
        }


def train_rescue(
    features: FeatureSet,
    in_bank: TrainedModel,
    *,
    config: RescueConfig | None = None,
    progress: Progress | None = None,
    client: Client | None = None,
) -> RescueResult:
    """Return the rescue model trained on `in_bank`'s rejected pool and its held-out test.

    With a Dask `client` the boosters are trained on the cluster's workers.
    """
    config = config or RescueConfig()
    rows = population(features)
    everyone = np.flatnonzero(rows)
    score = in_bank.model.predict(design_matrix(features, in_bank.model.spec, everyone))
    cutoff = float(np.quantile(score, 1.0 - config.accept_share))
    rejected = np.zeros(len(rows), dtype=bool)
    rejected[everyone[score < cutoff]] = True
    label = features.table[LABEL].fill_null(0).to_numpy()
    weight = np.where(rejected, 1.0, config.accepted_weight)
    trained = train_scorer(
        features,
        name="rescue",
        columns=features.feature_columns(FUSED),
        rows=rows if config.accepted_weight > 0 else rejected,
        label=label,
        config=config.training,
        weight=weight,
        judge=rejected,
        progress=progress,
        client=client,
    )
    trained.model.metadata.update(
        {
            "in_bank_model": in_bank.model.name,
            "in_bank_cutoff": cutoff,
            "accept_share": config.accept_share,
            "accepted_weight": config.accepted_weight,
        }
    )
    y = label[trained.test_rows].astype(np.int64)
    k = round(config.top_share * len(y))
    if k < 1:
        raise ConfigError(
            f"the held-out rejected pool has {len(y)} customers; a top share of "
            f"{config.top_share} selects nobody. Use a larger base or a larger top_share.",
            setting="top_share",
        )
    # Highest scores first; ties broken by row order so the list is reproducible.
    top = np.argsort(-trained.test_score, kind="stable")[:k]
    control = np.random.default_rng(config.seed).choice(len(y), size=k, replace=False)
    rescued_yes, control_yes = int(y[top].sum()), int(y[control].sum())
    return RescueResult(
        model=trained,
        cutoff=cutoff,
        pool=int(rejected.sum()),
        pool_test=len(y),
        rescued=k,
        rescued_responders=rescued_yes,
        control=k,
        control_responders=control_yes,
        test=two_proportion_diff(rescued_yes, k, control_yes, k),
    )

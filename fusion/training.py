"""One training run: acquisition (in-bank and fused), rescue, uplift; registered and summarised.

`train_all` is the training step of the pipeline (`fusion.pipeline.train_models`, which `fusion
train` and the demo run) on a feature set and the bank's past campaign. It saves
every model in the registry and returns a `TrainingRun` whose `summary()` holds every
figure the model report prints, as plain JSON-ready values.

Model names in the registry:

    acquisition          fused acquisition model (scores the base)
    acquisition-in-bank  the in-bank-only model, kept for comparison and as the rescue's gate
    rescue               the rescue model for customers acquisition-in-bank rejects (its
                         metadata names the in-bank version its cut-off belongs to)
    uplift               the best uplift learner on the campaign (by validation Qini)
    campaign-response    the response model the uplift is compared with

The first version of a name becomes CURRENT (there is no champion to beat); every later one is
a challenger, with the held-out customers it was judged on, until `fusion models promote` moves
CURRENT through the gate (`fusion.models.promotion`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from fusion.features import FUSED, IN_BANK, FeatureSet
from fusion.models import metrics
from fusion.models.acquisition import (
    LABEL,
    AcquisitionConfig,
    ScorerTask,
    TrainedModel,
    train_acquisition,
    train_scorer,
)
from fusion.models.booster import BoosterConfig
from fusion.models.campaign import UpliftConfig, UpliftResult, train_uplift
from fusion.models.classifier import ScoreModel
from fusion.models.rescue import RescueConfig, RescueResult, train_rescue
from fusion.models.scenarios import Scenario
from fusion.progress import Progress
from fusion.registry import Holdout, ModelRef, Registry, UpliftArtifact

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "SCENARIO_TRAINING",
    "ScenarioRun",
    "TrainingConfig",
    "TrainingRun",
    "train_all",
    "train_scenario",
]

# A scenario's pair of models: the acquisition models' split, without pruning and without the
# tag profile (app usage and tag counts carry the vendor's data), and a learning rate twice the
# acquisition models' (with early stopping twice as quick), so a scenario costs two plain fits
# of about half the rounds: a bank runs many scenarios, and their figures are judged by the
# fused model's gain over the in-bank one trained the same way.
SCENARIO_TRAINING = AcquisitionConfig(
    boost=BoosterConfig(learning_rate=0.1, early_stopping_rounds=40),
    prune=None,
    tag_profile_k=0,
)


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Settings of every model of a training run."""

    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    rescue: RescueConfig = field(default_factory=RescueConfig)
    uplift: UpliftConfig = field(default_factory=UpliftConfig)


@dataclass
class TrainingRun:
    """The models of one run, their held-out figures and where the registry put them."""

    acquisition: dict[str, TrainedModel]
    rescue: RescueResult
    uplift: UpliftResult
    refs: dict[str, ModelRef]
    seconds: dict[str, float]
    snapshot_date: str
    # fused minus in-bank AUC with DeLong's paired CI; None when their test rows differ
    auc_gain: metrics.AucDiff | None = None
    challengers: tuple[str, ...] = ()  # names whose new version did not become CURRENT

    def summary(self) -> dict[str, Any]:
        """Return every headline figure as JSON-ready values (a non-finite number is None)."""
        return _finite(self._summary())

    def _summary(self) -> dict[str, Any]:
        in_bank = self.acquisition["in_bank"]
        fused = self.acquisition["fused"]
        gain = self.auc_gain
        return {
            "snapshot_date": self.snapshot_date,
            "models": {name: ref.version for name, ref in self.refs.items()},
            "challengers": sorted(self.challengers),
            "acquisition": {
                "in_bank": {**in_bank.evaluation.summary(), **_inputs(in_bank)},
                "fused": {**fused.evaluation.summary(), **_inputs(fused)},
                "auc_gain": fused.evaluation.auc - in_bank.evaluation.auc,
                "auc_gain_ci": [None, None] if gain is None else [gain.ci_low, gain.ci_high],
                "auc_gain_p_value": None if gain is None else gain.p_value,
            },
            "rescue": self.rescue.summary(),
            "uplift": self.uplift.summary(),
            "seconds": self.seconds,
        }


def _finite(value: Any) -> Any:
    """Return `value` with NaN and infinities replaced by None, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


def _inputs(trained: TrainedModel) -> dict[str, Any]:
    prune = trained.prune
    return {
        "inputs": len(trained.model.names),
        "candidates": len(trained.model.names) + (len(prune.dropped) if prune else 0),
        "rounds": trained.model.booster.num_boosted_rounds(),
    }


def train_all(
    features: FeatureSet,
    *,
    campaign: pl.DataFrame,
    registry: Registry,
    now: datetime,
    config: TrainingConfig | None = None,
    true_uplift: np.ndarray[Any, Any] | None = None,
    progress: Progress | None = None,
    client: Client | None = None,
) -> TrainingRun:
    """Train, judge and register every model; return the run (see the module docstring).

    `true_uplift` (per feature-table row) is for synthetic worlds only: it adds the correlation
    of predicted with true uplift and the true incremental conversions to the summary. With a
    Dask `client` (`fusion.jobs.ClusterEngine.client`) every booster is fitted on the cluster's
    workers with `xgboost.dask`; scoring, metrics and the registry are the same as in process.
    """
    config = config or TrainingConfig()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    acquisition = train_acquisition(
        features, config=config.acquisition, progress=progress, client=client
    )
    seconds["acquisition"] = time.perf_counter() - start
    start = time.perf_counter()
    rescue = train_rescue(
        features, acquisition["in_bank"], config=config.rescue, progress=progress, client=client
    )
    seconds["rescue"] = time.perf_counter() - start
    start = time.perf_counter()
    uplift = train_uplift(
        features, campaign, config=config.uplift, true_uplift=true_uplift, progress=progress,
        client=client,
    )  # fmt: skip
    seconds["uplift"] = time.perf_counter() - start

    fused = acquisition["fused"].model
    fused.name = "acquisition"
    in_bank = acquisition["in_bank"].model
    in_bank.name = "acquisition-in-bank"
    rescue.model.model.metadata["in_bank_model"] = in_bank.name
    response = uplift.response.model
    response.name = "campaign-response"
    artifact = UpliftArtifact(
        name="uplift",
        model=uplift.model,
        spec=uplift.spec,
        metadata={
            "learner": uplift.best,
            "snapshot_date": features.manifest.snapshot_date.isoformat(),
            "salt_epoch": features.manifest.salt_epoch,
            "taxonomy_version": features.manifest.taxonomy_version,
            **uplift.summary(),  # with its training_digest
        },
    )
    holdouts = {
        fused.name: _holdout(features, acquisition["fused"]),
        in_bank.name: _holdout(features, acquisition["in_bank"]),
        rescue.model.model.name: _holdout(features, rescue.model),
        response.name: _holdout(features, uplift.response),
        "uplift": _uplift_holdout(features, uplift),
    }
    refs: dict[str, ModelRef] = {}
    challengers = tuple(name for name in holdouts if registry.current(name) is not None)
    for model in (fused, in_bank, rescue.model.model, response):
        if model is rescue.model.model:
            # The list's gate must be the very in-bank model whose cut-off the rescue stores,
            # not whatever acquisition-in-bank is CURRENT when the lists are built.
            model.metadata["in_bank_version"] = refs[in_bank.name].version
        refs[model.name] = _register(registry, model, now, holdouts[model.name])
        model.metadata["version"] = refs[model.name].version
    refs["uplift"] = _register(registry, artifact, now, holdouts["uplift"])
    return TrainingRun(
        acquisition=acquisition,
        rescue=rescue,
        uplift=uplift,
        refs=refs,
        seconds=seconds,
        snapshot_date=features.manifest.snapshot_date.isoformat(),
        auc_gain=_auc_gain(features, acquisition),
        challengers=challengers,
    )


def _register(
    registry: Registry, model: ScoreModel | UpliftArtifact, now: datetime, holdout: Holdout
) -> ModelRef:
    """Save `model`: CURRENT when its name has none yet, else a challenger awaiting the gate."""
    first = registry.current(model.name) is None
    return registry.save(model, created_at=now, make_current=first, holdout=holdout)


def _holdout(features: FeatureSet, trained: TrainedModel) -> Holdout:
    """Return a scoring model's test rows as the registry keeps them for the gate."""
    ids = features.table["customer_id"].to_numpy()[trained.test_rows].astype(np.int64)
    label = trained.test_label if trained.test_label is not None else np.zeros(len(ids))
    return Holdout(ids, np.asarray(label).astype(np.int8))


def _uplift_holdout(features: FeatureSet, uplift: UpliftResult) -> Holdout:
    """Return the uplift model's held-out A/B rows: ids, responses and arms."""
    ids = features.table["customer_id"].to_numpy()[uplift.test_rows].astype(np.int64)
    label = np.zeros(len(ids)) if uplift.test_label is None else uplift.test_label
    arm = np.zeros(len(ids)) if uplift.test_treatment is None else uplift.test_treatment
    return Holdout(ids, np.asarray(label).astype(np.int8), np.asarray(arm).astype(np.int8))


def _auc_gain(features: FeatureSet, models: dict[str, TrainedModel]) -> metrics.AucDiff | None:
    """Return fused minus in-bank AUC with DeLong's CI, paired on their shared test rows."""
    fused, in_bank = models["fused"], models["in_bank"]
    if not np.array_equal(fused.test_rows, in_bank.test_rows):
        return None
    label = features.table[LABEL].fill_null(0).to_numpy()[fused.test_rows]
    return metrics.auc_difference(label, fused.test_score, in_bank.test_score)


@dataclass
class ScenarioRun:
    """A scenario's in-bank and fused models, judged on the same held-out rows."""

    scenario: Scenario
    models: dict[str, TrainedModel]  # "in_bank", "fused"
    refs: dict[str, ModelRef]
    auc_gain: metrics.AucDiff | None
    population: int
    label_rate: float
    seconds: float
    challengers: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """Return the scenario's figures as JSON-ready values."""
        gain = self.auc_gain
        fused, in_bank = self.models["fused"].evaluation, self.models["in_bank"].evaluation
        return _finite(
            {
                "scenario": self.scenario.name,
                "description": self.scenario.description,
                "population": self.population,
                "label_rate": self.label_rate,
                "test_rows": fused.rows,
                "in_bank_auc": in_bank.auc,
                "fused_auc": fused.auc,
                "auc_gain": fused.auc - in_bank.auc,
                "auc_gain_ci": [None, None] if gain is None else [gain.ci_low, gain.ci_high],
                "auc_gain_p_value": None if gain is None else gain.p_value,
                "models": {name: ref.version for name, ref in self.refs.items()},
                "challengers": sorted(self.challengers),
                "seconds": self.seconds,
            }
        )


def train_scenario(
    features: FeatureSet,
    scenario: Scenario,
    label: np.ndarray[Any, Any],
    *,
    registry: Registry,
    now: datetime,
    config: AcquisitionConfig = SCENARIO_TRAINING,
    progress: Progress | None = None,
    client: Client | None = None,
) -> ScenarioRun:
    """Return a response scenario's in-bank and fused models, trained, judged and registered.

    `label` is the scenario's 0/1 label per feature row, NaN where unknown
    (`fusion.models.scenarios.scenario_label`); the rows are its population with a known label.
    """
    start = time.perf_counter()
    known = ~np.isnan(np.asarray(label, dtype=np.float64))
    rows = scenario.population_mask(features) & known
    y = np.nan_to_num(np.asarray(label, dtype=np.float64))
    names = {"in_bank": scenario.in_bank_name, "fused": scenario.model_name}
    models = {
        kind: train_scorer(
            features,
            ScorerTask(
                name=names[kind],
                columns=tuple(features.feature_columns(groups)),
                rows=rows,
                label=y,
            ),
            config=config,
            progress=progress,
            client=client,
        )
        for kind, groups in (("in_bank", IN_BANK), ("fused", FUSED))
    }
    challengers = tuple(n for n in names.values() if registry.current(n) is not None)
    refs = {}
    for trained in models.values():
        column = getattr(scenario.label, "column", None)
        trained.model.metadata.update({"label": column, "scenario": scenario.name})
        refs[trained.model.name] = _register(
            registry, trained.model, now, _holdout(features, trained)
        )
        trained.model.metadata["version"] = refs[trained.model.name].version
    fused, in_bank = models["fused"], models["in_bank"]
    gain = None
    if np.array_equal(fused.test_rows, in_bank.test_rows) and fused.test_label is not None:
        gain = metrics.auc_difference(fused.test_label, fused.test_score, in_bank.test_score)
    return ScenarioRun(
        scenario, models, refs, gain, int(rows.sum()), float(y[rows].mean()),
        time.perf_counter() - start, challengers,
    )  # fmt: skip

"""Train every model on a snapshot's features, score the base and write the lists, report.

`train_models` fits acquisition (in-bank and fused), rescue and uplift and registers them in the
run's registry; `score_and_list` scores the base with the current models and writes the target
lists per branch; `model_report` renders the training run. `model_versions`, `promote_model`
and `rollback_model` list the registry and move a model's CURRENT through the
champion/challenger gate (`fusion.models.promotion`), each move recorded in the store. With an
`Engine` on a Dask cluster, training fits every booster with xgboost.dask and scoring scores the
base by row chunk there.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from contracts.errors import ConfigError
from fusion.features import FeatureSet
from fusion.jobs import ClusterEngine, Engine, score_features
from fusion.lists import AcquisitionScorer, TargetLists, build_target_lists, write_branch_lists
from fusion.models.champion import GateRule
from fusion.models.classifier import ScoreModel
from fusion.models.promotion import Decision, promote_version, rollback_version
from fusion.models.scenarios import Scenario, scenario_label
from fusion.monitoring import write_training_profiles
from fusion.pipeline.feature_tables import read_features
from fusion.progress import Progress
from fusion.registry import Registry
from fusion.reports.models import write_model_report
from fusion.runfolder import RunFolder
from fusion.scoring import ScoringResult, score_base
from fusion.store import Store
from fusion.training import ScenarioRun, TrainingRun, train_all, train_scenario
from matcher.atomic import atomic_path

__all__ = [
    "ModelVersion",
    "cluster_scorer",
    "model_report",
    "model_versions",
    "promote_model",
    "rollback_model",
    "score_and_list",
    "score_scenario",
    "train_models",
    "train_scenario_models",
]


def train_models(
    folder: RunFolder,
    features: FeatureSet,
    campaign: pl.DataFrame,
    *,
    now: datetime,
    true_uplift: np.ndarray[Any, Any] | None = None,
    engine: Engine | None = None,
    progress: Progress | None = None,
) -> TrainingRun:
    """Return the training run of every model, registered in the run's registry.

    Each monitored model's training profile (`fusion.monitoring`) is written beside it.

    `true_uplift` (per feature row) is known in a synthetic world only: the caller that holds
    the world passes it (`fusion.training.train_all`). An `engine` on a Dask cluster fits every
    booster there; any other engine (or none) trains in this process.
    """
    client = engine.client if isinstance(engine, ClusterEngine) else None
    registry = Registry(folder.models)
    run = train_all(
        features,
        campaign=campaign,
        registry=registry,
        now=now,
        true_uplift=true_uplift,
        progress=progress,
        client=client,
    )
    # What monitoring compares every later scoring run with: bins and counts beside each model.
    write_training_profiles(registry, features)
    return run


def score_and_list(
    folder: RunFolder,
    features: FeatureSet,
    *,
    engine: Engine | None = None,
    progress: Progress | None = None,
) -> TargetLists:
    """Return the base's scores and the target lists per branch, written to the run folder.

    With an `engine` the acquisition model scores the base there (`cluster_scorer`); the rescue
    and uplift lists are scored in this process.
    """
    registry = Registry(folder.models)
    return build_target_lists(
        registry,
        features,
        scores_dir=folder.scores,
        lists_dir=folder.lists,
        progress=progress,
        scorer=cluster_scorer(engine, folder, registry) if engine else None,
    )


def cluster_scorer(engine: Engine, folder: RunFolder, registry: Registry) -> AcquisitionScorer:
    """Return a scorer that scores the base by row chunk on `engine` (`score_features`)."""

    def score(
        model: ScoreModel, features: FeatureSet, rows: np.ndarray[Any, Any], out: Path, deciles: int
    ) -> ScoringResult:
        job = folder.new_job("scores")
        version = str(model.metadata["version"])
        start = time.perf_counter()
        try:
            parts = score_features(
                engine, features, registry, model.name, job, version=version, reason_deciles=deciles
            )
            wanted = features.table["customer_id"].filter(pl.Series(rows))
            scored = parts.read().filter(pl.col("customer_id").is_in(wanted.implode()))
            with atomic_path(out) as partial:
                scored.write_parquet(partial)
        finally:
            shutil.rmtree(job, ignore_errors=True)
        return ScoringResult(out, scored.height, time.perf_counter() - start, model.name, version)

    return score


def model_report(
    folder: RunFolder,
    run: TrainingRun,
    features: FeatureSet,
    campaign: pl.DataFrame,
    lists: TargetLists,
    scenarios: tuple[ScenarioRun, ...] = (),
) -> Path:
    """Return the model report page written for the training run and the base's scores."""
    scores = pl.read_parquet(lists.scores.path)
    out = folder.reports / f"models-{run.snapshot_date}"
    return write_model_report(run, features, campaign, scores, out, scenarios=scenarios)


def train_scenario_models(
    folder: RunFolder,
    features: FeatureSet,
    scenario: Scenario,
    *,
    outcomes: pl.DataFrame | None,
    now: datetime,
    engine: Engine | None = None,
    progress: Progress | None = None,
) -> ScenarioRun:
    """Return a response scenario's in-bank and fused models, registered in the run's registry.

    `outcomes` is the bank's outcome file (customer_id + outcome columns) the scenario's label
    may name; the first version of each model becomes CURRENT, later ones are challengers.
    """
    if scenario.kind != "response":
        raise ConfigError(
            f"scenario {scenario.name} is an uplift scenario: `fusion train` (with --campaign) "
            "trains it with the acquisition, rescue and response models",
            setting="scenario",
        )
    client = engine.client if isinstance(engine, ClusterEngine) else None
    label = scenario_label(features, scenario, outcomes)
    return train_scenario(
        features, scenario, label, registry=Registry(folder.models), now=now,
        progress=progress, client=client,
    )  # fmt: skip


def score_scenario(
    folder: RunFolder, features: FeatureSet, scenario: Scenario, *, top_deciles: int = 3
) -> tuple[ScoringResult, dict[str, dict[str, Path]]]:
    """Return the scenario's population scored by its CURRENT model and its list per branch.

    Scores go to `scores/<scenario>.parquet`, the list (deciles 1..top_deciles, ranked) to
    `lists/<scenario>/<branch>.csv|parquet`; every row names the model version that scored it.
    """
    registry = Registry(folder.models)
    model = registry.load_score_model(scenario.model_name)
    rows = scenario.population_mask(features)
    scored = score_base(
        model, features, folder.scores / f"{scenario.name}.parquet", rows=rows,
        reason_deciles=top_deciles,
    )  # fmt: skip
    ranked = (
        pl.read_parquet(scored.path)
        .filter(pl.col("decile") <= top_deciles)
        .sort("score", descending=True, maintain_order=True)
    )
    return scored, write_branch_lists(ranked, folder.lists / scenario.name)


@dataclass(frozen=True)
class ModelVersion:
    """One saved version of a model: whether it is CURRENT, and its held-out figure."""

    name: str
    version: str
    current: bool
    kind: str  # "score" or "uplift"
    snapshot_date: str
    metric: str  # "auc" or "qini"
    value: float | None  # on the version's own held-out customers


def model_versions(folder: RunFolder, name: str | None = None) -> list[ModelVersion]:
    """Return every saved version (of `name`, or of every model), oldest first per model."""
    registry = Registry(folder.models)
    found = []
    for model in [name] if name else registry.names():
        current = registry.current(model)
        for version in registry.versions(model):
            document = registry.describe(model, version)
            metadata = document["metadata"]
            if document["kind"] == "score":
                metric, value = "auc", metadata.get("test", {}).get("auc")
            else:
                learner = metadata.get("learners", {}).get(metadata.get("best"), {})
                metric, value = "qini", learner.get("qini")
            found.append(
                ModelVersion(
                    model,
                    version,
                    version == current,
                    document["kind"],
                    str(metadata.get("snapshot_date", "")),
                    metric,
                    value,
                )
            )
    return found


def _challenger_features(
    folder: RunFolder, registry: Registry, name: str, version: str | None
) -> FeatureSet:
    """Return the feature set of the snapshot the challenger was trained on."""
    versions = registry.versions(name)
    chosen = version or (versions[-1] if versions else None)
    if chosen is None or chosen not in versions:
        return read_features(folder)  # promote_version names the missing version
    snapshot = str(registry.describe(name, chosen)["metadata"].get("snapshot_date", ""))
    return read_features(folder, date.fromisoformat(snapshot) if snapshot else None)


def promote_model(
    folder: RunFolder,
    store: Store,
    name: str,
    *,
    actor: str,
    now: datetime,
    version: str | None = None,
    reason: str | None = None,
    override: bool = False,
    rule: GateRule | None = None,
) -> Decision:
    """Return the decision on promoting `version` (default: the newest) of model `name`.

    The gate judges it against CURRENT on its held-out customers in the features of the
    snapshot it was trained on; the decision is recorded in the store, moved or refused.
    """
    registry = Registry(folder.models)
    features = _challenger_features(folder, registry, name, version)
    return promote_version(
        registry, store, features, name, actor=actor, now=now, version=version,
        reason=reason, override=override, rule=rule,
    )  # fmt: skip


def rollback_model(
    folder: RunFolder,
    store: Store,
    name: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None,
    version: str | None = None,
) -> Decision:
    """Return the decision moving `name`'s CURRENT back (to the version it replaced)."""
    return rollback_version(
        Registry(folder.models), store, name, actor=actor, now=now, reason=reason,
        version=version,
    )  # fmt: skip

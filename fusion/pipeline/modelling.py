"""Train every model on a snapshot's features, score the base and write the lists, report.

`train_models` fits acquisition (in-bank and fused), rescue and uplift and registers them in the
run's registry; `score_and_list` scores the base with the current models and writes the target
lists per branch; `model_report` renders the training run. With an `Engine` on a Dask cluster,
training fits every booster with xgboost.dask and scoring scores the base by row chunk there.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fusion.features import FeatureSet
from fusion.jobs import ClusterEngine, Engine, score_features
from fusion.lists import AcquisitionScorer, TargetLists, build_target_lists
from fusion.models.classifier import ScoreModel
from fusion.progress import Progress
from fusion.registry import Registry
from fusion.reports.models import write_model_report
from fusion.runfolder import RunFolder
from fusion.scoring import ScoringResult
from fusion.training import TrainingRun, train_all
from matcher.atomic import atomic_path

__all__ = ["cluster_scorer", "model_report", "score_and_list", "train_models"]


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

    `true_uplift` (per feature row) is known in a synthetic world only: the caller that holds
    the world passes it (`fusion.training.train_all`). An `engine` on a Dask cluster fits every
    booster there; any other engine (or none) trains in this process.
    """
    client = engine.client if isinstance(engine, ClusterEngine) else None
    return train_all(
        features,
        campaign=campaign,
        registry=Registry(folder.models),
        now=now,
        true_uplift=true_uplift,
        progress=progress,
        client=client,
    )


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
) -> Path:
    """Return the model report page written for the training run and the base's scores."""
    scores = pl.read_parquet(lists.scores.path)
    out = folder.reports / f"models-{run.snapshot_date}"
    return write_model_report(run, features, campaign, scores, out)

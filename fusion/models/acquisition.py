"""Acquisition: who opens mobile banking in the window, from in-bank features alone or fused.

The population is the customers not yet on mobile banking at the snapshot (the only ones who can
open it). Rows are split by `design.split_customers` (train / valid / test, stable per customer);
each model is fitted on train with early stopping on valid, pruned to its stable variables, fitted
again on those, and judged on test only: AUC, KS, PR-AUC, gains and calibration by decile.

Two models on the same rows answer the bank's question "is the vendor's data worth buying?": the
in-bank model (the real case: 71 variables, AUC 0.831) and the fused one (the same plus app
usage, tag counts and the tag profile). Deciles and reason codes come from `ScoreModel`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import xgboost as xgb

from contracts.errors import ConfigError
from fusion.features import FUSED, IN_BANK, FeatureSet
from fusion.models import metrics
from fusion.models.booster import BoosterConfig
from fusion.models.classifier import (
    PruneConfig,
    PruneReport,
    ScoreModel,
    decile_edges,
    fit_booster,
    stable_features,
)
from fusion.models.design import (
    TEST,
    TRAIN,
    VALID,
    DesignSpec,
    design_matrix,
    feature_labels,
    fit_tag_profile,
    split_customers,
)
from fusion.models.distributed import Rows, trained_on
from fusion.progress import Progress

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "AcquisitionConfig",
    "Evaluation",
    "ScorerTask",
    "TrainedModel",
    "evaluate",
    "population",
    "train_acquisition",
    "train_scorer",
    "training_digest",
]

LABEL = "opened_mb"


@dataclass(frozen=True, kw_only=True)
class AcquisitionConfig:
    """How the acquisition models are trained; the defaults are the ones the report shows."""

    boost: BoosterConfig = field(default_factory=BoosterConfig)
    prune: PruneConfig | None = field(default_factory=PruneConfig)
    tag_profile_k: int = 40  # 0: no tag profile
    valid_share: float = 0.1
    test_share: float = 0.3
    seed: int = 7


@dataclass(frozen=True)
class Evaluation:
    """A scoring model's held-out figures."""

    rows: int
    positives: int
    auc: float
    ks: float
    pr_auc: float
    gains: pl.DataFrame
    calibration: pl.DataFrame

    def summary(self) -> dict[str, float | int]:
        return {
            "rows": self.rows,
            "positives": self.positives,
            "auc": self.auc,
            "ks": self.ks,
            "pr_auc": self.pr_auc,
        }


@dataclass
class TrainedModel:
    """A model, its held-out evaluation, its pruning and its scores on the test rows."""

    model: ScoreModel
    evaluation: Evaluation
    prune: PruneReport | None
    test_rows: np.ndarray[Any, np.dtype[np.int64]]  # feature-table rows of the test split
    test_score: np.ndarray[Any, np.dtype[np.float64]]
    test_label: np.ndarray[Any, Any] | None = None  # the label on the test rows


def population(features: FeatureSet) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Return the rows that can open mobile banking: not registered at the snapshot."""
    return (features.table["mb_registered"] == 0).fill_null(False).to_numpy()


def evaluate(y: np.ndarray[Any, Any], score: np.ndarray[Any, Any]) -> Evaluation:
    """Return AUC, KS, PR-AUC, gains and calibration of `score` against `y`."""
    return Evaluation(
        rows=len(y),
        positives=int(np.sum(y)),
        auc=metrics.roc_auc(y, score),
        ks=metrics.ks_statistic(y, score),
        pr_auc=metrics.pr_auc(y, score),
        gains=metrics.gains_table(y, score),
        calibration=metrics.calibration_table(y, score),
    )


@dataclass(frozen=True, eq=False)
class ScorerTask:
    """What a scoring model learns: its name, inputs, rows, label, weights and judged population.

    `rows` and `judge` are boolean masks over the feature table; `label` and `weight` are per
    feature-table row. `judge` (a mask inside `rows`, default `rows`) is the population the model
    is for: its test rows are the evaluation and its scores set the deciles.
    """

    name: str
    columns: tuple[str, ...]
    rows: np.ndarray[Any, Any]
    label: np.ndarray[Any, Any]
    weight: np.ndarray[Any, Any] | None = None
    judge: np.ndarray[Any, Any] | None = None


@dataclass(frozen=True)
class _Split:
    train: np.ndarray[Any, np.dtype[np.int64]]
    valid: np.ndarray[Any, np.dtype[np.int64]]
    test: np.ndarray[Any, np.dtype[np.int64]]
    judge: np.ndarray[Any, Any]  # the judged population's mask


def train_scorer(
    features: FeatureSet,
    task: ScorerTask,
    *,
    config: AcquisitionConfig,
    progress: Progress | None = None,
    client: Client | None = None,
) -> TrainedModel:
    """Return a scoring model trained on `task.rows` of `features` for `task.label`.

    The split of the rows into train / valid / test follows the customer ids; the tag profile
    (when configured) is fitted on the training rows only. With a Dask `client` every booster
    (pruning folds and the final fit) is trained on the cluster's workers; scoring and the
    evaluation stay in this process.
    """
    split = _split(features, task, config)
    y = np.asarray(task.label, dtype=np.float32)
    w = None if task.weight is None else np.asarray(task.weight, dtype=np.float32)
    profile = None
    if config.tag_profile_k and any(c.startswith("ext_") for c in task.columns):
        profile = fit_tag_profile(features, split.train, k=config.tag_profile_k, seed=config.seed)
    step = _stepper(progress, task.name)
    booster, spec, prune_report = _fit(
        features, DesignSpec(task.columns, profile), split, y, w,
        config=config, step=step, client=client,
    )  # fmt: skip
    model = ScoreModel(
        name=task.name,
        booster=booster,
        spec=spec,
        labels=feature_labels(features.manifest, spec),
        decile_edges=np.zeros(9),
    )
    # Deciles of the whole population the model is for, so "decile 1" means the same in every
    # list scored from it.
    everyone = np.flatnonzero(split.judge)
    population_score = model.predict(design_matrix(features, spec, everyone))
    model.decile_edges = decile_edges(population_score)
    test_score = population_score[np.searchsorted(everyone, split.test)]
    evaluation = evaluate(y[split.test], test_score)
    model.metadata.update(
        {
            "label": LABEL,
            "snapshot_date": features.manifest.snapshot_date.isoformat(),
            "salt_epoch": features.manifest.salt_epoch,
            "taxonomy_version": features.manifest.taxonomy_version,
            "rows": {"train": len(split.train), "valid": len(split.valid), "test": len(split.test)},
            "rounds": booster.num_boosted_rounds(),
            "inputs": len(spec.names),
            "pruned": len(prune_report.dropped) if prune_report else 0,
            "test": evaluation.summary(),
            "training_digest": training_digest(features, split.train, y),
            "trained_on": trained_on(client),
            "config": _config_record(config),
        }
    )
    step("done", 1.0)
    return TrainedModel(model, evaluation, prune_report, split.test, test_score, y[split.test])


def _split(features: FeatureSet, task: ScorerTask, config: AcquisitionConfig) -> _Split:
    """Return the task's train, valid and test rows (test: of the judged population only)."""
    split = split_customers(
        features.table["customer_id"].to_numpy(),
        seed=config.seed,
        valid=config.valid_share,
        test=config.test_share,
    )
    rows = task.rows
    judge = rows if task.judge is None else (task.judge & rows)
    out = _Split(
        train=np.flatnonzero(rows & (split == TRAIN)),
        valid=np.flatnonzero(rows & (split == VALID)),
        test=np.flatnonzero(judge & (split == TEST)),
        judge=judge,
    )
    if min(len(out.train), len(out.valid), len(out.test)) == 0:
        raise ConfigError(
            f"model {task.name}: the population of {int(np.sum(rows))} rows leaves an empty "
            "train, valid or test split; use a larger base",
            setting="population",
        )
    return out


def _fit(
    features: FeatureSet,
    spec: DesignSpec,
    split: _Split,
    y: np.ndarray[Any, Any],
    w: np.ndarray[Any, Any] | None,
    *,
    config: AcquisitionConfig,
    step: Progress,
    client: Client | None,
) -> tuple[xgb.Booster, DesignSpec, PruneReport | None]:
    """Return the booster fitted on the stable inputs (all of them without pruning) and its spec."""
    train, valid = split.train, split.valid
    x_train = design_matrix(features, spec, train)
    x_valid = design_matrix(features, spec, valid)
    prune_report = None
    if config.prune is not None:
        prune_report = stable_features(
            x_train, y[train], names=spec.names, config=config.boost, prune=config.prune,
            weight=None if w is None else w[train], progress=lambda _, f: step("prune", 0.6 * f),
            client=client,
        )  # fmt: skip
        kept = [spec.names.index(n) for n in prune_report.kept]
        spec = spec.select(prune_report.kept)
        x_train, x_valid = x_train[:, kept], x_valid[:, kept]
    booster = fit_booster(
        Rows(x_train, y[train], None if w is None else w[train]),
        Rows(x_valid, y[valid], None if w is None else w[valid]),
        names=spec.names, config=config.boost, client=client,
    )  # fmt: skip
    step("fit", 0.9)
    return booster, spec, prune_report


def _config_record(config: AcquisitionConfig) -> dict[str, Any]:
    """Return how the model was trained, as model.json records it (xgboost's own names)."""
    return {
        "boost": config.boost.params(),
        "prune": None if config.prune is None else vars(config.prune),
        "tag_profile_k": config.tag_profile_k,
        "split_seed": config.seed,
        "valid_share": config.valid_share,
        "test_share": config.test_share,
    }


def train_acquisition(
    features: FeatureSet,
    *,
    config: AcquisitionConfig | None = None,
    progress: Progress | None = None,
    client: Client | None = None,
) -> dict[str, TrainedModel]:
    """Return the in-bank and the fused acquisition models, trained and judged on the same rows.

    With a Dask `client` the boosters are trained on the cluster's workers.
    """
    config = config or AcquisitionConfig()
    rows = population(features)
    label = features.table[LABEL].fill_null(0).to_numpy()
    return {
        kind: train_scorer(
            features,
            ScorerTask(
                name=f"acquisition-{kind}",
                columns=tuple(features.feature_columns(groups)),
                rows=rows,
                label=label,
            ),
            config=config,
            progress=progress,
            client=client,
        )
        for kind, groups in (("in_bank", IN_BANK), ("fused", FUSED))
    }


def training_digest(
    features: FeatureSet, rows: np.ndarray[Any, Any], *targets: np.ndarray[Any, Any]
) -> str:
    """Return the sha256 of what a model learned from: its training rows' ids, inputs and targets.

    Covers the feature manifest (columns, groups, codes), and on `rows` (feature-table row
    numbers): the customer ids, the value and null mask of every model column (FUSED, whichever
    the model kept: its spec is in its model.json), the tag CSR and each of `targets` (arrays per
    feature-table row: the label; for uplift the treatment too). A change to any input value of a
    training row changes the digest. Column by column, vectorised.
    """
    digest = hashlib.sha256()
    manifest = json.dumps(features.manifest.to_dict(), sort_keys=True, ensure_ascii=False)
    digest.update(manifest.encode())
    rows = np.asarray(rows)
    if rows.dtype == np.bool_:
        rows = np.flatnonzero(rows)
    columns = ["customer_id", *features.feature_columns(FUSED)]
    for series in features.table.select(columns)[rows].iter_columns():
        if not series.dtype.is_numeric():
            series = series.cast(pl.Float64)  # booleans and the like: as the design reads them
        nulls = series.null_count()
        digest.update(f"{series.name}:{series.dtype}:{nulls};".encode())
        if nulls:
            digest.update(np.packbits(series.is_null().to_numpy()).tobytes())
            series = series.fill_null(0)
        digest.update(np.ascontiguousarray(series.to_numpy()).tobytes())
    tags = features.tags[rows]
    for part in (features.tag_ids, tags.indptr, tags.indices, tags.data):
        digest.update(f"{part.dtype}:{len(part)};".encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    for target in targets:
        digest.update(np.asarray(target)[rows].astype("<f8").tobytes())
    return digest.hexdigest()


def _stepper(progress: Progress | None, name: str) -> Progress:
    """Return a callback that reports every stage of model `name` on one bar."""

    def step(stage: str, fraction: float) -> None:
        del stage
        if progress is not None:
            progress(name, fraction)

    return step

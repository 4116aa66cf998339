"""Training digests: which rows, inputs and targets taught a model, for every registered model."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from fusion.features import FeatureSet
from fusion.models.acquisition import population, training_digest
from fusion.models.campaign import campaign_data
from fusion.models.design import TRAIN, split_customers
from tests.support.models import ModelWorld


def _train_rows(features: FeatureSet) -> np.ndarray:
    split = split_customers(features.table["customer_id"].to_numpy(), seed=7)
    return np.flatnonzero(population(features) & (split == TRAIN))


def _with_value(features: FeatureSet, column: str, row: int, value: float | None) -> FeatureSet:
    changed = features.table.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(pl.lit(value))
        .otherwise(pl.col(column))
        .cast(features.table[column].dtype)
        .alias(column)
    )
    return dataclasses.replace(features, table=changed)


def test_one_changed_feature_value_of_a_training_row_changes_the_digest(model_world: ModelWorld):
    features = model_world.features
    rows = _train_rows(features)
    label = features.table["opened_mb"].fill_null(0).to_numpy().astype(np.float32)
    digest = training_digest(features, rows, label)
    assert model_world.run.acquisition["fused"].model.metadata["training_digest"] == digest
    column = features.feature_columns()[5]
    old = features.table[column][int(rows[10])]
    changed = _with_value(features, column, int(rows[10]), (old or 0) + 1)
    assert training_digest(changed, rows, label) != digest
    # A value becoming null is a change too, though it may read as NaN.
    assert training_digest(_with_value(features, column, int(rows[10]), None), rows, label) != (
        digest
    )
    # Rows outside training did not teach the model.
    outside = int(np.setdiff1d(np.arange(features.table.height), rows)[0])
    moved = _with_value(features, column, outside, (features.table[column][outside] or 0) + 1)
    assert training_digest(moved, rows, label) == digest
    tags = features.tags.copy()
    tags.data[tags.indptr[rows[0]] : tags.indptr[rows[-1] + 1]] *= 2
    assert training_digest(dataclasses.replace(features, tags=tags), rows, label) != digest
    flipped = label.copy()
    flipped[rows[3]] = 1 - flipped[rows[3]]
    assert training_digest(features, rows, flipped) != digest


def test_the_uplift_artifact_records_its_training_digest(model_world: ModelWorld):
    features = model_world.features
    document = model_world.registry.describe("uplift")
    data = campaign_data(features, model_world.campaign)
    split = split_customers(features.table["customer_id"].to_numpy(), seed=7)
    train = np.flatnonzero(data.member & (split == TRAIN))
    digest = training_digest(features, train, data.responded, data.treatment)
    assert document["metadata"]["training_digest"] == digest
    treatment = data.treatment.copy()
    treatment[train[0]] = 1 - treatment[train[0]]
    assert training_digest(features, train, data.responded, treatment) != digest

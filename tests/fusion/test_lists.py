"""The food-coupon list follows the uplift model's verdict: ranked by uplift when its training
found targeting by uplift supported by the data, by the campaign-response model when not; every
row names the model and version that ranked it."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from contracts.errors import ModelError
from fusion.lists import RESPONSE_MODEL, build_target_lists, uplift_targeting
from fusion.models.acquisition import population
from fusion.models.design import design_matrix
from fusion.registry import Registry, UpliftArtifact
from tests.support.models import TRAINED_AT, ModelWorld

pytestmark = pytest.mark.slow  # scores the 12k world's base twice


def _registry(model_world: ModelWorld, root: Path, targeting_by: str) -> Registry:
    """Return a copy of the world's registry whose CURRENT uplift model says `targeting_by`."""
    registry = Registry(root / "models")
    shutil.copytree(model_world.registry.root, registry.root)
    uplift = registry.load("uplift")
    assert isinstance(uplift, UpliftArtifact)
    metadata = {k: v for k, v in uplift.metadata.items() if k != "version"}
    metadata.update(targeting_by=targeting_by, uplift_supported=targeting_by == "uplift")
    registry.save(
        UpliftArtifact(uplift.name, uplift.model, uplift.spec, metadata),
        created_at=TRAINED_AT + timedelta(days=1),
    )
    return registry


def _ranked(model_world: ModelWorld, root: Path, targeting_by: str) -> tuple[Registry, dict]:
    registry = _registry(model_world, root, targeting_by)
    built = build_target_lists(
        registry, model_world.features, scores_dir=root / "scores", lists_dir=root / "lists"
    )
    return registry, {
        "built": built,
        "scores": pl.read_parquet(root / "scores" / "uplift.parquet"),
        "list": pl.concat(
            pl.read_parquet(p) for p in (root / "lists" / "food-coupon").glob("*.parquet")
        ),
    }


def test_supported_uplift_ranks_the_list_by_the_uplift_model(
    model_world: ModelWorld, tmp_path: Path
):
    registry, found = _ranked(model_world, tmp_path, "uplift")
    version = registry.current("uplift")
    targeting = found["built"].targeting
    assert (targeting.by, targeting.model, targeting.version) == ("uplift", "uplift", version)
    scores = found["scores"]
    assert "response_score" not in scores.columns
    assert scores["predicted_uplift"].is_sorted(descending=True)
    assert set(scores["model"]) == {"uplift"} and set(scores["model_version"]) == {version}
    assert set(found["list"]["targeting_by"]) == {"uplift"}
    assert targeting.describe() == f"targeting by uplift: uplift {version}"


def test_unsupported_uplift_ranks_the_list_by_the_response_model(
    model_world: ModelWorld, tmp_path: Path
):
    registry, found = _ranked(model_world, tmp_path, "response")
    version = registry.current(RESPONSE_MODEL)
    targeting = found["built"].targeting
    assert (targeting.by, targeting.model, targeting.version) == (
        "response",
        RESPONSE_MODEL,
        version,
    )
    assert "uplift not supported by the data" in targeting.describe()
    scores = found["scores"]
    # The ranking is the response model's own scores of the population, highest first.
    features = model_world.features
    rows = np.flatnonzero(population(features))
    response = registry.load_score_model(RESPONSE_MODEL)
    direct = response.predict(design_matrix(features, response.spec, rows))
    expected = features.table["customer_id"].to_numpy()[rows][np.argsort(-direct, kind="stable")]
    assert scores["customer_id"].to_list() == expected.tolist()
    assert np.allclose(scores["response_score"].to_numpy(), np.sort(direct)[::-1])
    assert set(scores["model"]) == {RESPONSE_MODEL} and set(scores["model_version"]) == {version}
    coupon = found["list"]
    assert set(coupon["targeting_by"]) == {"response"} and set(coupon["model"]) == {RESPONSE_MODEL}
    assert coupon.height == round(0.3 * rows.size)
    # The uplift model's prediction stays beside it, for the record.
    assert scores["predicted_uplift"].null_count() == 0


def test_unsupported_uplift_without_a_response_model_is_refused(
    model_world: ModelWorld, tmp_path: Path
):
    registry = _registry(model_world, tmp_path, "response")
    shutil.rmtree(registry.root / RESPONSE_MODEL)
    with pytest.raises(ModelError, match="no campaign-response model; retrain"):
        uplift_targeting(registry)

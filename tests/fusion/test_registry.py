"""The model registry: versions, CURRENT, digests; models come back scoring identically."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from contracts.errors import ConfigError, ModelError
from fusion.models.classifier import ScoreModel
from fusion.models.design import design_matrix
from fusion.registry import Registry, UpliftArtifact
from tests.support.models import TRAINED_AT, ModelWorld


def test_a_training_run_registers_every_model_as_current(model_world: ModelWorld):
    registry = model_world.registry
    assert registry.names() == [
        "acquisition",
        "acquisition-in-bank",
        "campaign-response",
        "rescue",
        "uplift",
    ]
    for name, ref in model_world.run.refs.items():
        assert registry.current(name) == ref.version
        assert ref.version.startswith("20261002T083000Z-")
        document = registry.describe(name)
        assert document["kind"] == ("uplift" if name == "uplift" else "score")
        assert document["metadata"]["snapshot_date"] == "2026-09-30"
    described = registry.describe("acquisition")
    for key in ("training_digest", "test", "config", "rows", "salt_epoch"):
        assert key in described["metadata"]
    assert (
        described["metadata"]["test"]["auc"] == model_world.run.acquisition["fused"].evaluation.auc
    )


def test_loaded_models_score_exactly_like_the_trained_ones(model_world: ModelWorld):
    features, run = model_world.features, model_world.run
    rows = run.acquisition["fused"].test_rows
    loaded = model_world.registry.load_score_model("acquisition")
    trained = run.acquisition["fused"].model
    assert loaded.names == trained.names and loaded.labels == trained.labels
    x = design_matrix(features, loaded.spec, rows)
    np.testing.assert_array_equal(loaded.predict(x), trained.predict(x))
    np.testing.assert_array_equal(loaded.decile_edges, trained.decile_edges)
    assert loaded.reasons(x[:20]).equals(trained.reasons(x[:20]))
    uplift = model_world.registry.load("uplift")
    assert isinstance(uplift, UpliftArtifact)
    xu = design_matrix(features, uplift.spec, run.uplift.test_rows)
    np.testing.assert_array_equal(uplift.model.predict(xu), run.uplift.test_uplift)
    with pytest.raises(ModelError, match="uplift model, not a scoring model"):
        model_world.registry.load_score_model("uplift")


def _copy_model(model_world: ModelWorld, root: Path) -> tuple[Registry, ScoreModel]:
    registry = Registry(root)
    model = model_world.registry.load_score_model("acquisition")
    return registry, model


def test_versions_current_and_promote(model_world: ModelWorld, tmp_path: Path):
    registry, model = _copy_model(model_world, tmp_path / "models")
    first = registry.save(model, created_at=TRAINED_AT)
    second = registry.save(model, created_at=TRAINED_AT + timedelta(days=1), make_current=False)
    assert registry.versions("acquisition") == [first.version, second.version]
    assert registry.current("acquisition") == first.version
    registry.promote("acquisition", second.version)
    assert registry.current("acquisition") == second.version
    with pytest.raises(ModelError, match="already exists"):
        registry.save(model, created_at=TRAINED_AT)
    with pytest.raises(ModelError, match="no version"):
        registry.promote("acquisition", "20990101T000000Z-0123456789")
    with pytest.raises(ModelError, match="no version"):
        registry.load("acquisition", "../../etc")
    with pytest.raises(ModelError, match="run `fusion train`"):
        registry.load("rescue")
    with pytest.raises(ConfigError, match="model name"):
        registry.versions("../x")
    with pytest.raises(ConfigError, match="timezone-aware"):
        registry.save(model, created_at=datetime(2026, 1, 1))


@pytest.mark.parametrize("victim", ["booster.json", "tag_profile.npz"])
def test_an_altered_artifact_is_refused(model_world: ModelWorld, tmp_path: Path, victim: str):
    registry, model = _copy_model(model_world, tmp_path / "models")
    ref = registry.save(model, created_at=datetime(2026, 10, 3, tzinfo=UTC))
    path = ref.path / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"{victim} is missing or differs"):
        registry.load("acquisition")


def test_model_json_is_plain_json_without_pickles(model_world: ModelWorld):
    ref = model_world.run.refs["acquisition"]
    document = json.loads((ref.path / "model.json").read_text())
    assert document["format"] == "bankfusion-model/3"
    assert set(document["files"]) == {"booster.json", "tag_profile.npz", "holdout.npz"}
    with np.load(ref.path / "tag_profile.npz", allow_pickle=False) as saved:
        assert set(saved.files) == {"tag_ids", "components", "labels", "numbers"}
    # The held-out customers the gate scores champion and challenger on: ids and labels.
    holdout = model_world.registry.holdout("acquisition")
    assert holdout is not None and holdout.treatment is None
    fused = model_world.run.acquisition["fused"]
    assert len(holdout.customer_id) == len(fused.test_rows)
    np.testing.assert_array_equal(holdout.label, fused.test_label)
    uplift = model_world.registry.holdout("uplift")
    assert uplift is not None and uplift.treatment is not None
    assert set(np.unique(uplift.treatment)) == {0, 1}


def test_the_version_covers_model_json_not_only_the_boosters(
    model_world: ModelWorld, tmp_path: Path
):
    registry, model = _copy_model(model_world, tmp_path / "models")
    first = registry.save(model, created_at=TRAINED_AT)
    # The same booster in the same second, with other cut points, labels or metadata: each is
    # another model and gets its own version instead of colliding with the first.
    model.decile_edges = model.decile_edges * 0.5
    second = registry.save(model, created_at=TRAINED_AT)
    model.labels = {**model.labels, model.names[0]: "another label"}
    third = registry.save(model, created_at=TRAINED_AT)
    model.metadata = {**model.metadata, "note": "retrained elsewhere"}
    fourth = registry.save(model, created_at=TRAINED_AT)
    versions = {first.version, second.version, third.version, fourth.version}
    assert len(versions) == 4 and all(v.startswith("20261002T083000Z-") for v in versions)
    np.testing.assert_array_equal(
        registry.load_score_model("acquisition", second.version).decile_edges,
        model.decile_edges,
    )


def test_an_edited_model_json_is_refused(model_world: ModelWorld, tmp_path: Path):
    registry, model = _copy_model(model_world, tmp_path / "models")
    ref = registry.save(model, created_at=TRAINED_AT)
    path = ref.path / "model.json"
    document = json.loads(path.read_text())
    document["decile_edges"][0] += 0.01
    path.write_text(json.dumps(document, indent=1))
    with pytest.raises(ModelError, match=r"model\.json differs from the content"):
        registry.load("acquisition")


def test_a_file_swapped_after_describe_is_refused_by_load(model_world: ModelWorld, tmp_path: Path):
    registry, model = _copy_model(model_world, tmp_path / "models")
    ref = registry.save(model, created_at=TRAINED_AT)
    other = model_world.registry.load_score_model("acquisition-in-bank")
    assert registry.describe("acquisition")["version"] == ref.version
    (ref.path / "booster.json").write_bytes(bytes(other.booster.save_raw("json")))
    with pytest.raises(ModelError, match=r"booster\.json is missing or differs from the digest"):
        registry.load("acquisition")


def test_load_builds_the_model_from_the_bytes_it_checked(
    model_world: ModelWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    registry, model = _copy_model(model_world, tmp_path / "models")
    ref = registry.save(model, created_at=TRAINED_AT)
    swapped = bytes(model_world.registry.load_score_model("acquisition-in-bank").booster.save_raw())
    reads: list[str] = []
    read_bytes = Path.read_bytes

    def read_then_swap(path: Path) -> bytes:
        data = read_bytes(path)
        reads.append(path.name)
        if path.name == "booster.json":
            # Another process swaps the file right after it was read and checked: a second
            # read would load the swapped booster unchecked.
            path.write_bytes(swapped)
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_swap)
    loaded = registry.load_score_model("acquisition")
    monkeypatch.undo()
    assert sorted(reads) == ["booster.json", "model.json", "tag_profile.npz"]
    x = design_matrix(model_world.features, loaded.spec, np.arange(200))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert (ref.path / "booster.json").read_bytes() == swapped
    with pytest.raises(ModelError, match=r"booster\.json is missing or differs"):
        registry.load("acquisition")

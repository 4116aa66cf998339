"""labs.world.drift: later snapshots of a world, stable or drifted, the same bytes from the seed."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from contracts.taxonomy import load_taxonomy
from labs.world import WorldFiles, WorldSummary, load_world
from labs.world.drift import DRIFT_KEEP, REMOVED_CATEGORY, STABLE_KEEP, Later, later_world
from labs.world.errors import WorldError

pytestmark = pytest.mark.slow  # each derives a whole 20,000-customer world


def persona_mix(world: WorldFiles) -> dict[str, float]:
    frame = pl.read_parquet(world.personas).filter(pl.col("customer_id").is_not_null())
    counts = frame["persona"].value_counts()
    return {p: n / frame.height for p, n in counts.iter_rows()}


def test_the_drifted_snapshot_is_younger_and_has_lost_a_category(
    world: tuple[WorldFiles, WorldSummary], tmp_path: Path
):
    source, _ = world
    later = later_world(source.root, tmp_path / "drifted", kind=Later.DRIFTED)
    load_world(later.root)  # every file is there
    before, after = persona_mix(source), persona_mix(later)
    for persona in DRIFT_KEEP:
        assert after[persona] < before[persona]
    assert after["gamer"] > before["gamer"] * 1.2
    old = pl.read_parquet(source.customers)
    new = pl.read_parquet(later.customers)
    assert float(new["age"].mean()) < float(old["age"].mean()) - 2  # type: ignore[arg-type]
    assert set(new["customer_id"]) < set(old["customer_id"])
    taxonomy = load_taxonomy(json.loads(source.manifest.read_text())["config"]["taxonomy_version"])
    category = taxonomy.categories.filter(pl.col("code") == REMOVED_CATEGORY)["category_id"]
    gone = taxonomy.apps.filter(pl.col("category_id").is_in(category.implode()))["app_id"]
    apps = pl.read_parquet(later.vendor_users)
    assert apps.height == pl.read_parquet(source.vendor_users).height
    assert not apps["app_ids"].explode().is_in(gone.implode()).any()
    lengths = [apps[c].list.len() for c in ("app_ids", "app_days", "app_sessions")]
    assert (lengths[0] == lengths[1]).all() and (lengths[0] == lengths[2]).all()
    manifest = json.loads(later.manifest.read_text())
    assert manifest["config"]["snapshot_date"] == "2026-10-31"
    assert manifest["later"]["kind"] == "drifted"


def test_the_stable_snapshot_samples_the_same_customers_again_the_same_way_every_time(
    world: tuple[WorldFiles, WorldSummary], tmp_path: Path
):
    source, _ = world
    first = later_world(source.root, tmp_path / "a", kind=Later.STABLE)
    again = later_world(source.root, tmp_path / "b", kind=Later.STABLE)
    for name in WorldFiles.PARQUET:
        if (first.root / name).exists():
            assert (first.root / name).read_bytes() == (again.root / name).read_bytes(), name
    share = pl.read_parquet(first.customers).height / pl.read_parquet(source.customers).height
    assert abs(share - STABLE_KEEP) < 0.01
    before, after = persona_mix(source), persona_mix(first)
    assert max(abs(before[p] - after[p]) for p in before) < 0.01
    assert (first.vendor_users.read_bytes()) == source.vendor_users.read_bytes()


def test_a_missing_world_or_category_is_refused(
    world: tuple[WorldFiles, WorldSummary], tmp_path: Path
):
    with pytest.raises(WorldError, match=r"no world\.json"):
        later_world(tmp_path / "nothing", tmp_path / "out", kind=Later.STABLE)
    with pytest.raises(WorldError, match="no app category"):
        later_world(world[0].root, tmp_path / "out", kind=Later.DRIFTED, category="nope")

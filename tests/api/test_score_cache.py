"""POST /v1/scores answers from the batch's stored rows of the CURRENT version, says so, and
gives the same numbers a fresh computation gives; a promotion, a rollback or a newer feature
table changes what it answers: the service's own promotion or rollback at the very next request,
a feature table written by another process within `STATE_MAX_AGE_S`."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from fusion.features import FeatureSet
from fusion.pipeline.feature_tables import read_features
from fusion.registry import Registry
from fusion.runfolder import RunFolder
from fusion.scoring import read_score_run, score_rows
from fusion.served_scores import STATE_MAX_AGE_S
from tests.support.server import NOW, ServedRun, bearer, serve_copy


def _scores(served: ServedRun, ids: list[int]) -> dict:
    answer = httpx.post(
        f"{served.url}/v1/scores",
        json={"customer_ids": ids},
        headers=bearer(served.tokens.campaign_tool),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _assert_fresh(body: dict, folder: RunFolder, features: FeatureSet) -> None:
    """Assert that every score of `body` is what its model computes now from `features`."""
    model = Registry(folder.models).load_score_model("acquisition", body["model_version"])
    position = {c: i for i, c in enumerate(features.table["customer_id"].to_list())}
    ids = [s["customer_id"] for s in body["scores"]]
    fresh = score_rows(model, features, np.asarray([position[c] for c in ids]), reason_deciles=10)
    np.testing.assert_allclose(
        [s["score"] for s in body["scores"]], fresh["score"], rtol=0, atol=1e-6
    )
    assert [s["decile"] for s in body["scores"]] == fresh["decile"].to_list()
    for item, row in zip(body["scores"], fresh.iter_rows(named=True), strict=True):
        assert item["branch_id"] == row["branch_id"]
        assert item["reasons"] == [row[f"reason_{i}"] for i in (1, 2, 3) if row[f"reason_{i}"]]


def test_scored_customers_come_from_the_batch_and_the_others_live(served: ServedRun):
    folder = served.folder
    batch = pl.read_parquet(folder.scores / "acquisition.parquet")
    run = read_score_run(folder.scores / "acquisition.parquet")
    assert run is not None
    features = read_features(folder)
    stored = batch["customer_id"].sample(12, seed=3).to_list()
    outside = (
        features.table.join(batch.select("customer_id"), on="customer_id", how="anti")[
            "customer_id"
        ]
        .head(3)
        .to_list()
    )
    body = _scores(served, [*stored, *outside])
    assert body["model_version"] == run.version
    sources = [(s["source"], s["scored_at"]) for s in body["scores"]]
    assert [s for s, _ in sources] == ["batch"] * 12 + ["live"] * 3
    assert {datetime.fromisoformat(at) for _, at in sources[:12]} == {run.scored_at}
    assert all(at is None for _, at in sources[12:])
    _assert_fresh(body, folder, features)
    assert _scores(served, [*stored, *outside]) == body  # reasons filled once, same answer


@pytest.fixture
def own(demo_run: Path, tmp_path: Path):
    """A server of its own: these tests move CURRENT and add features."""
    with serve_copy(demo_run, tmp_path) as served:
        yield served


def test_promotion_rollback_and_newer_features_change_the_next_answer(own: ServedRun):
    folder = own.folder
    registry = Registry(folder.models)
    champion = registry.current("acquisition")
    challenger = registry.load_score_model("acquisition-in-bank")
    challenger.name = "acquisition"
    version = registry.save(
        challenger,
        created_at=NOW + timedelta(days=1),
        make_current=False,
        holdout=registry.holdout("acquisition"),
    ).version
    ids = pl.read_parquet(folder.scores / "acquisition.parquet")["customer_id"].head(8).to_list()
    before = _scores(own, ids)
    assert {s["source"] for s in before["scores"]} == {"batch"}

    promoted = httpx.post(
        f"{own.url}/v1/models/acquisition/promote",
        json={"version": version, "override": True, "reason": "testing what scores serve"},
        headers=bearer(own.tokens.admin),
        timeout=120,
    )
    assert promoted.status_code == 200, promoted.text
    during = _scores(own, ids)
    assert during["model_version"] == version
    assert {s["source"] for s in during["scores"]} == {"live"}  # no batch of this version
    features = read_features(folder)
    _assert_fresh(during, folder, features)

    back = httpx.post(
        f"{own.url}/v1/models/acquisition/rollback",
        json={"reason": "back to the champion"},
        headers=bearer(own.tokens.admin),
        timeout=120,
    )
    assert back.status_code == 200 and back.json()["to_version"] == champion
    assert _scores(own, ids) == before

    newer = FeatureSet(
        features.table,
        features.tags,
        features.tag_ids,
        dataclasses.replace(
            features.manifest, snapshot_date=features.manifest.snapshot_date + timedelta(days=31)
        ),
    )
    newer.write(
        folder.features / (features.manifest.snapshot_date + timedelta(days=31)).isoformat()
    )
    time.sleep(STATE_MAX_AGE_S)  # written by another hand: served within the state's age
    after = _scores(own, ids)
    assert {s["source"] for s in after["scores"]} == {"live"}
    assert after["model_version"] == champion
    _assert_fresh(after, folder, newer)

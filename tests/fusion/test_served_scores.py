"""Serving scores: the batch's stored rows of the CURRENT version equal a fresh computation,
a promotion or rollback is served once the last check of the folder is older than a second (at
once after `refresh`), and customers whose features are newer than the batch (or whom the batch
did not score) are scored live."""

from __future__ import annotations

import dataclasses
import os
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from contracts.errors import ModelError
from fusion.features import FeatureSet
from fusion.models.acquisition import population
from fusion.models.classifier import ScoreModel
from fusion.registry import Registry
from fusion.runfolder import RunFolder
from fusion.scoring import ScoreRun, read_score_run, score_base, score_rows
from fusion.served_scores import STATE_MAX_AGE_S, BatchScores, ServedScores, ServingScorer
from tests.support.models import TRAINED_AT, ModelWorld

SCORED_AT = datetime(2026, 10, 3, 2, tzinfo=UTC)


@pytest.fixture
def run(model_world: ModelWorld, tmp_path: Path) -> RunFolder:
    """A run folder: the trained registry, one feature snapshot, the population batch-scored."""
    folder = RunFolder(tmp_path / "run")
    shutil.copytree(model_world.registry.root, folder.models)
    features = model_world.features
    features.write(folder.features / features.manifest.snapshot_date.isoformat())
    model = Registry(folder.models).load_score_model("acquisition")
    folder.scores.mkdir(parents=True)
    score_base(
        model, features, folder.scores / "acquisition.parquet", rows=population(features),
        now=SCORED_AT,
    )  # fmt: skip
    return folder


def _fresh(model: ScoreModel, features: FeatureSet, ids: list[int]) -> pl.DataFrame:
    """Return the scores of `ids` computed now, every reason included (the reference)."""
    position = {c: i for i, c in enumerate(features.table["customer_id"].to_list())}
    return score_rows(model, features, np.asarray([position[c] for c in ids]), reason_deciles=10)


def _check_equal(served: ServedScores, fresh: pl.DataFrame) -> None:
    assert [s.customer_id for s in served.scores] == fresh["customer_id"].to_list()
    np.testing.assert_allclose([s.score for s in served.scores], fresh["score"], rtol=0, atol=1e-6)
    assert [s.decile for s in served.scores] == fresh["decile"].to_list()
    assert [s.branch_id for s in served.scores] == fresh["branch_id"].to_list()
    for s, row in zip(served.scores, fresh.iter_rows(named=True), strict=True):
        expected = tuple(row[c] for c in ("reason_1", "reason_2", "reason_3") if row[c])
        assert s.reasons == expected, s.customer_id


def test_stored_scores_equal_a_fresh_computation_and_unscored_customers_are_live(
    run: RunFolder, model_world: ModelWorld
):
    features = model_world.features
    batch = pl.read_parquet(run.scores / "acquisition.parquet")
    assert read_score_run(run.scores / "acquisition.parquet").scored_at == SCORED_AT
    scored = batch.sample(40, seed=2)["customer_id"].to_list()
    outside = features.table.filter(pl.col("mb_registered") == 1)["customer_id"].head(5).to_list()
    serving = ServingScorer(run)
    assert serving.answer(scored) is None  # nothing loaded yet: the caller must compute

    served = serving.score([*scored, *outside, 42])
    model = Registry(run.models).load_score_model("acquisition")
    _check_equal(served, _fresh(model, features, [*scored, *outside]))
    assert served.version == Registry(run.models).current("acquisition")
    assert served.unknown == [42]
    sources = [(s.source, s.scored_at) for s in served.scores]
    assert sources == [("batch", SCORED_AT)] * 40 + [("live", None)] * 5
    # Reasons the batch left out (deciles 4-10) were computed once; now a plain lookup answers.
    assert any(batch.filter(pl.col("customer_id").is_in(scored))["reason_1"].is_null())
    again = serving.answer(scored)
    assert again is not None and again.scores == served.scores[:40]
    assert serving.answer(outside) is None  # live work goes to the caller's thread


def test_a_promotion_is_served_within_the_state_age_and_at_once_after_a_refresh(
    run: RunFolder, model_world: ModelWorld
):
    registry = Registry(run.models)
    champion = registry.current("acquisition")
    assert champion is not None
    challenger = registry.load_score_model("acquisition-in-bank")
    challenger.name = "acquisition"
    version = registry.save(
        challenger, created_at=TRAINED_AT.replace(day=20), make_current=False
    ).version
    ids = pl.read_parquet(run.scores / "acquisition.parquet")["customer_id"].head(20).to_list()
    now = [100.0]
    serving = ServingScorer(run, clock=lambda: now[0])
    before = serving.score(ids)
    assert {s.source for s in before.scores} == {"batch"}

    registry.promote("acquisition", version)  # as another process would: no refresh
    now[0] += STATE_MAX_AGE_S / 2
    assert serving.answer(ids) == before  # the last check of the folder is still young
    now[0] += STATE_MAX_AGE_S / 2
    assert serving.answer(ids) is None  # checked again: the stored rows are another version's
    during = serving.score(ids)
    assert during.version == version and {s.source for s in during.scores} == {"live"}
    _check_equal(
        during, _fresh(registry.load_score_model("acquisition"), model_world.features, ids)
    )

    registry.promote("acquisition", champion)  # a rollback moves the same pointer back
    serving.refresh()  # as the service does after its own promotion or rollback
    assert serving.answer(ids) is None  # no time passed, yet the folder was read afresh
    after = serving.score(ids)
    assert after == before
    assert serving.answer(ids) == before


def test_customers_with_newer_features_are_scored_live_until_the_next_batch(
    run: RunFolder, model_world: ModelWorld
):
    features = model_world.features
    model = Registry(run.models).load_score_model("acquisition")
    batch = pl.read_parquet(run.scores / "acquisition.parquet")
    ids = batch["customer_id"].head(10).to_list()
    gone = ids[-1]  # not in the newer snapshot: its stored row still answers
    table = features.table.with_columns(
        pl.when(pl.col("customer_id") == ids[0])
        .then(pl.col("tenure_months") + 24)
        .otherwise(pl.col("tenure_months"))
        .alias("tenure_months")
    )
    keep = (table["customer_id"] != gone).to_numpy()
    newer = FeatureSet(
        table.filter(pl.Series(keep)),
        features.tags[np.flatnonzero(keep)],
        features.tag_ids,
        dataclasses.replace(features.manifest, snapshot_date=date(2026, 10, 31)),
    )
    serving = ServingScorer(run)
    assert {s.source for s in serving.score(ids).scores} == {"batch"}

    newer.write(run.features / "2026-10-31")
    served = serving.score(ids)
    assert [s.source for s in served.scores] == ["live"] * 9 + ["batch"]
    _check_equal(
        ServedScores(served.model, served.version, served.scores[:9], []),
        _fresh(model, newer, ids[:9]),
    )
    assert served.scores[9].score == pytest.approx(
        batch.filter(pl.col("customer_id") == gone)["score"][0], abs=1e-12
    )

    score_base(model, newer, run.scores / "acquisition.parquet", rows=population(newer))
    rescored = serving.score(ids[:9])
    assert {s.source for s in rescored.scores} == {"batch"}
    _check_equal(rescored, _fresh(model, newer, ids[:9]))


def test_a_rebuilt_snapshot_or_a_file_without_footer_is_judged_by_what_it_says(
    run: RunFolder, model_world: ModelWorld
):
    features = model_world.features
    path = run.scores / "acquisition.parquet"
    ids = pl.read_parquet(path)["customer_id"].head(5).to_list()
    serving = ServingScorer(run)
    # The same snapshot rebuilt from other inputs (another vendor batch): newer features.
    rebuilt = dataclasses.replace(features.manifest, batches={"another-batch": 1})
    snapshot = run.features / features.manifest.snapshot_date.isoformat()
    FeatureSet(features.table, features.tags, features.tag_ids, rebuilt).write(snapshot)
    assert {s.source for s in serving.score(ids).scores} == {"live"}

    # A score file gathered by another writer (no footer): its own time against the features'.
    pl.read_parquet(path).write_parquet(path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    assert read_score_run(path) is None
    served = serving.score(ids)
    assert {s.source for s in served.scores} == {"batch"}
    written = datetime.fromtimestamp(path.stat().st_mtime_ns / 1e9, UTC)
    assert {s.scored_at for s in served.scores} == {written}
    manifest = snapshot / "manifest.json"
    later = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(manifest, ns=(later, later))  # the features written after that file
    assert {s.source for s in serving.score(ids).scores} == {"live"}


def test_no_current_model_is_a_model_error(tmp_path: Path):
    with pytest.raises(ModelError, match="no acquisition model is current"):
        ServingScorer(RunFolder(tmp_path)).score([1])


def test_stored_reasons_are_kept_as_codes_and_read_back_as_written():
    """Each row reads back its own reasons, best first; a row without any gets them once; a
    text the batch never wrote gets a code of its own."""
    frame = pl.DataFrame(
        {
            "customer_id": [30, 10, 20, 40],
            "branch_id": ["B2", "B1", None, "B1"],
            "score": [0.3, 0.9, 0.5, 0.1],
            "decile": [3, 1, 2, 9],
            "model_version": ["v1"] * 4,
            "reason_1": ["uses a rival bank app", "age 25-34", None, "age 25-34"],
            "reason_2": [None, "many shopping apps", None, "uses a rival bank app"],
            "reason_3": [None, None, None, "many shopping apps"],
        }
    )
    run = ScoreRun("acquisition", "v1", "2026-10-01", SCORED_AT, reason_deciles=3)
    batch = BatchScores(frame, run)
    rows = batch.locate(np.asarray([10, 20, 30, 40, 99], dtype=np.int64))
    assert rows.tolist() == [0, 1, 2, 3, -1]
    assert batch.reasons(0) == ("age 25-34", "many shopping apps")
    assert batch.reasons(2) == ("uses a rival bank app",)
    assert batch.reasons(3) == ("age 25-34", "uses a rival bank app", "many shopping apps")
    assert batch.unexplained(rows[:4]).tolist() == [False, True, False, False]

    batch.keep_reasons(np.asarray([1]), [("a new reason", "age 25-34")])
    assert batch.reasons(1) == ("a new reason", "age 25-34")
    assert not batch.unexplained(np.asarray([1])).any()
    assert batch.reasons(0) == ("age 25-34", "many shopping apps")  # others unchanged
    assert batch.served(20, 1).reasons == ("a new reason", "age 25-34")

"""Batch and single scoring agree; target lists per branch; no raw identifier in any output."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from contracts.errors import ConfigError, ModelError
from fusion.lists import LISTS, ListConfig, build_target_lists, write_branch_lists
from fusion.models.acquisition import population
from fusion.registry import Registry
from fusion.scoring import SCORE_SCHEMA, Scorer, score_base
from matcher.identity import normalize_phones
from tests.support.models import TRAINED_AT, ModelWorld


def test_batch_scores_every_row_in_chunks_with_reasons_for_the_top_deciles(
    model_world: ModelWorld, tmp_path: Path
):
    model = model_world.registry.load_score_model("acquisition")
    out = tmp_path / "scores.parquet"
    result = score_base(model, model_world.features, out, chunk_rows=1_000, reason_deciles=3)
    frame = pl.read_parquet(out)
    assert dict(frame.schema) == SCORE_SCHEMA
    assert result.rows == frame.height == model_world.features.table.height
    assert frame["customer_id"].to_list() == model_world.features.table["customer_id"].to_list()
    assert frame["model_version"].unique().to_list() == [model.metadata["version"]]
    top = frame.filter(pl.col("decile") <= 3)
    assert top["reason_1"].null_count() < top.height
    assert (
        frame.filter(pl.col("decile") > 3)["reason_1"].null_count()
        == frame.filter(pl.col("decile") > 3).height
    )
    # Deciles follow the score.
    by_decile = frame.group_by("decile").agg(pl.col("score").min()).sort("decile")
    assert by_decile["score"].to_list() == sorted(by_decile["score"].to_list(), reverse=True)
    with pytest.raises(ConfigError, match="chunk_rows"):
        score_base(model, model_world.features, out, chunk_rows=0)


def test_single_customer_scoring_equals_the_batch_row(model_world: ModelWorld, tmp_path: Path):
    model = model_world.registry.load_score_model("acquisition")
    features = model_world.features
    batch = pl.read_parquet(
        score_base(model, features, tmp_path / "all.parquet", reason_deciles=10).path
    )
    scorer = Scorer(model, features)
    assert len(scorer) == features.table.height
    wanted = batch["customer_id"].sample(25, seed=1).to_list()
    frame, unknown = scorer.score([*wanted, 42])
    assert unknown == [42]
    assert frame["customer_id"].to_list() == wanted  # request order
    expected = batch.filter(pl.col("customer_id").is_in(wanted))
    joined = frame.join(expected, on="customer_id", suffix="_batch")
    assert joined.height == 25
    np.testing.assert_allclose(joined["score"], joined["score_batch"], rtol=1e-6)
    assert (joined["decile"] == joined["decile_batch"]).all()
    for column in ("reason_1", "reason_2", "reason_3"):
        assert joined[column].to_list() == joined[f"{column}_batch"].to_list()
    empty, missing = scorer.score([])
    assert empty.height == 0 and missing == []


def test_target_lists_are_split_by_branch_and_ranked(model_world: ModelWorld, tmp_path: Path):
    features = model_world.features
    built = build_target_lists(
        model_world.registry,
        features,
        scores_dir=tmp_path / "scores",
        lists_dir=tmp_path / "lists",
        config=ListConfig(top_deciles=2),
    )
    assert built.scores.rows == int(population(features).sum())
    assert set(built.lists) == set(LISTS)
    mobile = built.lists["mobile-banking"]
    assert mobile["decile"].le(2).all() and mobile["reason_1"].null_count() < mobile.height
    rescue_model = model_world.registry.load_score_model("rescue")
    assert rescue_model.metadata["in_bank_cutoff"] == model_world.run.rescue.cutoff
    coupon = built.lists["food-coupon"]
    assert coupon.height == round(0.3 * built.scores.rows)
    # Ranked by what the uplift model's verdict says to target by (tests/fusion/test_lists.py).
    ranked_by = "predicted_uplift" if built.targeting.by == "uplift" else "response_score"
    assert coupon[ranked_by].to_list() == sorted(coupon[ranked_by].to_list(), reverse=True)
    for name, branches in built.files.items():
        total = 0
        for branch, paths in branches.items():
            part = pl.read_parquet(paths["parquet"])
            assert part["branch_id"].unique().to_list() == [branch]
            assert part["rank"].to_list() == list(range(1, part.height + 1))
            assert pl.read_csv(paths["csv"]).height == part.height
            total += part.height
        assert total == built.lists[name].height


def test_no_raw_phone_or_id_number_in_scores_or_lists(model_world: ModelWorld, tmp_path: Path):
    build_target_lists(
        model_world.registry,
        model_world.features,
        scores_dir=tmp_path / "scores",
        lists_dir=tmp_path / "lists",
    )
    customers = pl.read_parquet(model_world.world.customers, columns=["phone", "id_number"])
    phones = normalize_phones(customers["phone"]).values.drop_nulls().sample(300, seed=1)
    ids = customers["id_number"].drop_nulls().sample(300, seed=1)
    needles = [p.encode() for p in phones.to_list()] + [i.encode() for i in ids.to_list()]
    needles += [p[-11:].encode() for p in customers["phone"].drop_nulls().head(200).to_list()]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        assert not any(needle in data for needle in needles if len(needle) >= 11), path


def test_a_branch_id_that_cannot_name_a_file_is_refused(tmp_path: Path):
    frame = pl.DataFrame({"customer_id": [1], "branch_id": ["../up"], "score": [0.5]})
    with pytest.raises(ConfigError, match="cannot name a list file"):
        write_branch_lists(frame, tmp_path)
    with pytest.raises(ConfigError, match="uplift_share"):
        ListConfig(uplift_share=0.0)


def test_the_rescue_gate_is_the_in_bank_version_it_was_trained_behind(
    model_world: ModelWorld, tmp_path: Path
):
    registry = Registry(tmp_path / "models")
    shutil.copytree(model_world.registry.root, registry.root)
    rescue = registry.load_score_model("rescue")
    in_bank = model_world.run.refs["acquisition-in-bank"].version
    assert rescue.metadata["in_bank_version"] == in_bank

    def rescue_list() -> pl.DataFrame:
        return build_target_lists(
            registry, model_world.features, scores_dir=tmp_path / "s", lists_dir=tmp_path / "l"
        ).lists["rescue"]

    before = rescue_list()
    # acquisition-in-bank re-promoted alone (here: another model under its name). The stored
    # cut-off belongs to the old version, so the list must still be gated by that one.
    other = registry.load_score_model("acquisition")
    other.name = "acquisition-in-bank"
    registry.save(other, created_at=TRAINED_AT + timedelta(days=1))
    assert registry.current("acquisition-in-bank") != in_bank
    assert rescue_list().equals(before)
    shutil.rmtree(registry.root / "acquisition-in-bank" / in_bank)
    with pytest.raises(ModelError, match=rf"gates on acquisition-in-bank {in_bank}.*retrain"):
        rescue_list()


def _branches(out: Path) -> dict[str, list[int]]:
    return {
        p.stem: pl.read_parquet(p)["customer_id"].to_list() for p in sorted(out.glob("*.parquet"))
    }


def test_a_lists_branch_files_are_swapped_in_as_one_set(tmp_path: Path):
    out = tmp_path / "lists" / "rescue"
    out.mkdir(parents=True)
    (out / "B009.csv").write_text("customer_id\n1\n")  # written before generations existed
    first = pl.DataFrame({"customer_id": [1, 2, 3], "branch_id": ["B1", "B2", "B1"]})
    files = write_branch_lists(first, out)
    assert set(files) == {"B1", "B2"} and files["B1"]["csv"] == out / "B1.csv"
    assert out.is_symlink() and not (out / "B009.csv").exists()
    assert _branches(out) == {"B1": [1, 3], "B2": [2]}
    held = (out / "B2.parquet").resolve()  # a reader that resolved the set before the swap
    write_branch_lists(pl.DataFrame({"customer_id": [7], "branch_id": ["B1"]}), out)
    # A branch that dropped out of the list no longer has a file; the new set is whole.
    assert _branches(out) == {"B1": [7]} and not (out / "B2.csv").exists()
    assert pl.read_csv(out / "B1.csv")["rank"].to_list() == [1]
    assert pl.read_parquet(held)["customer_id"].to_list() == [2]  # kept for that reader
    write_branch_lists(pl.DataFrame({"customer_id": [8], "branch_id": ["B3"]}), out)
    generations = tmp_path / "lists" / ".rescue"
    assert len(list(generations.iterdir())) == 2 and not held.exists()
    assert not os.path.isabs(os.readlink(out))  # the run folder can move
    assert sorted(p.name for p in (tmp_path / "lists").iterdir()) == [".rescue", "rescue"]
    # A refused run leaves the served set as it was.
    with pytest.raises(ConfigError, match="cannot name a list file"):
        write_branch_lists(pl.DataFrame({"customer_id": [9], "branch_id": ["../x"]}), out)
    assert _branches(out) == {"B3": [8]} and len(list(generations.iterdir())) == 2

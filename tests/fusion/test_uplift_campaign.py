"""Uplift from a campaign table on the small model world: several offers, each with its own model
and intervals, and a campaign without an effect, which the result says targeting cannot use."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fusion.models.campaign import UpliftConfig, train_uplift
from fusion.models.uplift_arms import arm_effects
from fusion.reports.model_sections import uplift_section
from tests.support.models import FAST, ModelWorld

pytestmark = pytest.mark.slow

CHEAP = UpliftConfig(
    learners=("t_learner", "class_transformation"),
    folds=2,
    params=FAST.uplift.params,
    tag_profile_k=0,
)


def test_several_offers_each_get_a_model_and_intervals(model_world: ModelWorld, tmp_path: Path):
    campaign = model_world.campaign
    rng = np.random.default_rng(11)
    offer = np.where(rng.random(campaign.height) < 0.5, "sms", "email")
    arms = campaign.with_columns(
        pl.when(pl.col("treatment"))
        .then(pl.Series(offer))
        .otherwise(pl.lit("control"))
        .alias("arm")
    ).drop("treatment")  # derived from the arm
    result = train_uplift(model_world.features, arms, config=CHEAP)
    assert list(result.arms) == ["email", "sms"] and result.multi_arm is not None
    arm_of = dict(zip(arms["customer_id"].to_list(), arms["arm"].to_list(), strict=True))
    ids = model_world.features.table["customer_id"].to_numpy()[result.test_rows]
    held = np.array([arm_of[i] for i in ids])
    assert result.test_label is not None
    expected = arm_effects(result.test_label, held)
    for name, arm in result.arms.items():
        want = expected[name]
        assert (arm.effect.diff, arm.effect.ci_low, arm.effect.ci_high) == (
            want.diff,
            want.ci_low,
            want.ci_high,
        )
        assert arm.treated == int((held == name).sum()) and arm.control == int(
            (held == "control").sum()
        )
        assert arm.qini_ci[0] < arm.qini < arm.qini_ci[1]
    assert set(result.multi_arm.predict(np.zeros((2, len(result.spec.columns)))).keys()) == {
        "email",
        "sms",
    }
    assert set(result.summary()["arms"]) == {"email", "sms"}
    section = uplift_section(
        replace(model_world.run, uplift=result), model_world.features, arms, tmp_path
    )
    assert "Several offers, each against the same control" in "".join(section.html)
    assert section.data["arms"]["sms"]["qini_ci"] == list(result.arms["sms"].qini_ci)


def test_without_an_effect_targeting_falls_back_to_the_response_model(
    model_world: ModelWorld, tmp_path: Path
):
    campaign = model_world.campaign
    # The arms shuffled among the campaign's customers: the offer no longer changes anything.
    shuffled = campaign.with_columns(
        pl.Series(
            "treatment", np.random.default_rng(5).permutation(campaign["treatment"].to_numpy())
        )
    )
    result = train_uplift(model_world.features, shuffled, config=CHEAP)
    assert not result.supported and result.selection.best is None
    assert result.best == "t_learner" and result.targeting_by == "response"
    assert "not supported by the data" in result.verdict and "response model" in result.verdict
    summary = result.summary()
    assert summary["uplift_supported"] is False and summary["targeting_by"] == "response"
    section = uplift_section(
        replace(model_world.run, uplift=result), model_world.features, shuffled, tmp_path
    )
    page = "".join(section.html)
    assert "Targeting by uplift is not supported by the data." in page
    assert "(kept, unsupported)" in page and section.data["targeting_by"] == "response"

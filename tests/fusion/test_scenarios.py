"""Scenarios: declared in TOML with their label, population and kind; trained in pairs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from contracts.errors import ConfigError
from fusion.models.scenarios import BUILT_IN, load_scenarios, scenario_label
from fusion.registry import Registry
from fusion.reports.models import write_model_report
from fusion.training import train_scenario
from tests.support.models import FAST_ACQUISITION, TRAINED_AT, ModelWorld

DECLARED = """
[[scenario]]
name = "premium-card"
description = "card holders who upgrade"
label = { source = "outcome", column = "took_credit_card" }
population = [
  { column = "age", op = ">=", value = 30 },
  { column = "credit_card", op = "==", value = 0 },
]
"""


def test_scenarios_are_declared_in_toml_beside_the_built_in_ones(tmp_path: Path):
    assert {"mobile-banking", "mb-activation", "credit-card", "aum-growth", "food-coupon"} <= set(
        BUILT_IN
    )
    assert BUILT_IN["mobile-banking"].model_name == "acquisition"
    assert BUILT_IN["mobile-banking"].in_bank_name == "acquisition-in-bank"
    assert BUILT_IN["food-coupon"].kind == "uplift"
    path = tmp_path / "scenarios.toml"
    path.write_text(DECLARED)
    found = load_scenarios(path)
    premium = found["premium-card"]
    assert premium.kind == "response" and len(premium.population) == 2
    assert set(BUILT_IN) < set(found)
    with pytest.raises(ConfigError, match=r"scenario\[0\]\.label"):
        load_scenarios({"scenario": [{"name": "x-y", "label": {"source": "nowhere"}}]})
    with pytest.raises(ConfigError, match=r"scenario\[0\]\.population\.0\.op"):
        load_scenarios(
            {
                "scenario": [
                    {
                        "name": "x-y",
                        "label": {"source": "feature", "column": "opened_mb"},
                        "population": [{"column": "age", "op": "~", "value": 1}],
                    }
                ]
            }
        )
    with pytest.raises(ConfigError, match="TOML"):
        load_scenarios("this is [not toml")


def test_a_scenario_trains_in_bank_and_fused_models_judged_on_the_same_rows(
    model_world: ModelWorld, tmp_path: Path
):
    features = model_world.features
    outcomes = pl.read_parquet(model_world.world.outcomes)
    scenario = BUILT_IN["credit-card"]
    label = scenario_label(features, scenario, outcomes)
    population = scenario.population_mask(features)
    assert np.isnan(label[(features.table["credit_card"] == 1).to_numpy()]).all()
    assert not np.isnan(label[population]).any()
    with pytest.raises(ConfigError, match="--outcomes"):
        scenario_label(features, scenario, outcomes.drop("took_credit_card"))

    registry = Registry(tmp_path / "models")
    config = dataclasses.replace(FAST_ACQUISITION, prune=None, tag_profile_k=0)
    first = train_scenario(
        features, scenario, label, registry=registry, now=TRAINED_AT, config=config
    )
    summary = first.summary()
    assert set(first.refs) == {"credit-card", "credit-card-in-bank"} and not first.challengers
    assert registry.current("credit-card") == first.refs["credit-card"].version
    low, high = summary["auc_gain_ci"]
    # Both models judged on the same held-out rows (on this small world the gain is noise).
    assert 0.6 < summary["in_bank_auc"] and 0.6 < summary["fused_auc"]
    assert low < summary["auc_gain"] < high and summary["auc_gain_p_value"] is not None
    assert registry.holdout("credit-card").customer_id.size == summary["test_rows"]
    assert registry.describe("credit-card")["metadata"]["label"] == "took_credit_card"

    later = TRAINED_AT.replace(day=3)
    second = train_scenario(features, scenario, label, registry=registry, now=later, config=config)
    assert set(second.challengers) == {"credit-card", "credit-card-in-bank"}
    assert registry.current("credit-card") == first.refs["credit-card"].version

    scores = pl.DataFrame({"customer_id": [1], "decile": [1]})
    page = write_model_report(
        model_world.run, features, model_world.campaign, scores, tmp_path / "report",
        scenarios=(first,),
    )  # fmt: skip
    text = page.read_text()
    assert "Scenarios: fused against in-bank" in text and "credit-card" in text
    assert "95% DeLong CI" in text

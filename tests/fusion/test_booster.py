"""The one booster config: its checks, its xgboost parameters, and old saved names read back."""

from __future__ import annotations

import pytest

from contracts.errors import ConfigError
from fusion.models.booster import UPLIFT_BOOSTER, BoosterConfig
from fusion.models.uplift import TLearner


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("n_estimators", 0),
        ("n_estimators", 2.5),
        ("max_depth", 0),
        ("learning_rate", 0.0),
        ("subsample", 1.5),
        ("colsample_bytree", 0.0),
        ("reg_lambda", -1.0),
        ("min_child_weight", -1.0),
        ("early_stopping_rounds", 0),
        ("validation_fraction", 0.9),
        ("seed", -1),
        ("n_jobs", -1),
        ("n_jobs", True),
    ],
)
def test_booster_config_refuse_bad_values(setting, value):
    with pytest.raises(ConfigError, match=f"BoosterConfig.{setting} must be") as caught:
        BoosterConfig(**{setting: value})
    assert caught.value.setting == setting


def test_booster_config_are_frozen_and_keyword_only():
    params = BoosterConfig()
    with pytest.raises(AttributeError):
        params.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        BoosterConfig(100)  # type: ignore[call-arg]
    assert TLearner().params == UPLIFT_BOOSTER


def test_params_are_the_xgboost_names_of_the_settings():
    config = BoosterConfig(learning_rate=0.2, colsample_bytree=0.5, reg_lambda=2.0, n_jobs=3)
    assert config.params() == {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "tree_method": "hist",
        "eta": 0.2,
        "max_depth": 4,
        "min_child_weight": 10.0,
        "subsample": 0.8,
        "colsample_bytree": 0.5,
        "lambda": 2.0,
        "nthread": 3,
        "seed": 7,
    }
    assert config.params(objective="reg:squarederror", eval_metric="rmse")["eval_metric"] == "rmse"


def test_from_dict_reads_new_and_old_setting_names():
    assert BoosterConfig.from_dict(
        {"eta": 0.1, "max_rounds": 120, "colsample": 0.5, "nthread": None}
    ) == BoosterConfig(learning_rate=0.1, n_estimators=120, colsample_bytree=0.5, n_jobs=0)
    with pytest.raises(ConfigError, match="unknown booster settings"):
        BoosterConfig.from_dict({"gamma": 1.0})

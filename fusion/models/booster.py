"""The one xgboost configuration every booster of `fusion.models` is trained from.

`BoosterConfig` names each setting once, as xgboost's scikit-learn interface does
(`n_estimators`, `learning_rate`, `colsample_bytree`, `n_jobs`...), and `params()` turns it into
the parameter dict `xgboost.train` takes (tree_method hist). The scoring models (acquisition,
rescue, campaign response) use the class defaults; the uplift learners start from
`UPLIFT_BOOSTER`. The same seed and thread count give the same booster.

`BoosterConfig.from_dict` reads a config saved by `dataclasses.asdict`, including the names an
older version wrote (`colsample`, `eta`, `max_rounds`, `nthread`), so models in a registry stay
loadable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from contracts.errors import ConfigError

__all__ = ["UPLIFT_BOOSTER", "BoosterConfig", "is_int"]

# Names an older version saved its settings under -> the name they have now.
_OLD_NAMES = {
    "colsample": "colsample_bytree",
    "eta": "learning_rate",
    "max_rounds": "n_estimators",
    "nthread": "n_jobs",
}


def is_int(value: object) -> bool:
    """Return whether `value` is an integer (numpy's included), booleans excepted."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class BoosterConfig:
    """Gradient-boosting settings: the rounds, the trees, the sampling, early stopping, threads.

    Early stopping: with `early_stopping_rounds` set, training stops once the validation metric
    has not improved for that many rounds and the booster keeps the trees up to its best round;
    None trains all `n_estimators` rounds. A scoring model is given its validation rows; an uplift
    learner holds out `validation_fraction` of its own (stratified by label for classifiers) and
    skips early stopping when that split would hold fewer than 100 rows, or fewer than 10 of the
    rarer label. `n_jobs=0` uses every core.
    """

    n_estimators: int = 2000
    max_depth: int = 4
    learning_rate: float = 0.05
    min_child_weight: float = 10.0
    subsample: float = 0.8
    colsample_bytree: float = 0.6
    reg_lambda: float = 1.0
    early_stopping_rounds: int | None = 80
    validation_fraction: float = 0.2
    seed: int = 7
    n_jobs: int = 0

    def __post_init__(self) -> None:
        for ok, name, expected in (
            (is_int(self.n_estimators) and self.n_estimators >= 1, "n_estimators", "an int >= 1"),
            (is_int(self.max_depth) and self.max_depth >= 1, "max_depth", "an int >= 1"),
            (0 < self.learning_rate <= 1, "learning_rate", "in (0, 1]"),
            (self.min_child_weight >= 0, "min_child_weight", ">= 0"),
            (0 < self.subsample <= 1, "subsample", "in (0, 1]"),
            (0 < self.colsample_bytree <= 1, "colsample_bytree", "in (0, 1]"),
            (self.reg_lambda >= 0, "reg_lambda", ">= 0"),
            (
                self.early_stopping_rounds is None
                or (is_int(self.early_stopping_rounds) and self.early_stopping_rounds >= 1),
                "early_stopping_rounds",
                "None (off) or an int >= 1",
            ),
            (0 < self.validation_fraction <= 0.5, "validation_fraction", "in (0, 0.5]"),
            (is_int(self.seed) and self.seed >= 0, "seed", "an int >= 0"),
            (is_int(self.n_jobs) and self.n_jobs >= 0, "n_jobs", "an int >= 0 (0: all cores)"),
        ):
            if not ok:
                raise ConfigError(
                    f"BoosterConfig.{name} must be {expected}, got {getattr(self, name)!r}",
                    setting=name,
                )

    def params(
        self, *, objective: str = "binary:logistic", eval_metric: str = "auc"
    ) -> dict[str, Any]:
        """Return the `xgboost.train` parameter dict for `objective`, judged by `eval_metric`."""
        return {
            "objective": objective,
            "eval_metric": eval_metric,
            "tree_method": "hist",
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "nthread": self.n_jobs,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> BoosterConfig:
        """Return the config `dataclasses.asdict` saved, reading older setting names too."""
        known = {f.name for f in fields(cls)}
        settings = {_OLD_NAMES.get(name, name): value for name, value in saved.items()}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(
                f"unknown booster settings {unknown}; expected some of {sorted(known)}. Was the "
                "model written by a newer version?",
                setting="params",
            )
        if settings.get("n_jobs", 0) is None:  # older uplift models: None meant every core
            settings["n_jobs"] = 0
        return cls(**settings)


# What an uplift learner trains with when it is given no config (`fusion.models.uplift`).
UPLIFT_BOOSTER = BoosterConfig(
    n_estimators=300,
    min_child_weight=1.0,
    colsample_bytree=0.8,
    early_stopping_rounds=30,
    seed=0,
)

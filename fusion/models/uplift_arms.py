"""Several offers in one campaign: each treatment arm against the one control.

`arm_effects` gives each arm's effect on the response rate with its Newcombe interval;
`MultiArmUplift` fits one uplift learner (`fusion.models.uplift`) per arm on that arm's rows and
the control's, so every offer is judged against the same untreated customers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import numpy as np
import numpy.typing as npt
import polars as pl

from contracts.errors import ConfigError
from fusion.models.booster import BoosterConfig
from fusion.models.proportions import DiffResult, two_proportion_diff
from fusion.models.uplift import LEARNERS, UpliftModel
from fusion.models.uplift_inputs import Features, feature_matrix, outcome_labels
from fusion.models.vectors import one_per_row

if TYPE_CHECKING:
    pass

__all__ = ["MultiArmUplift", "arm_effects"]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


def _arms(arm: ArrayLike, rows: int, control: str) -> npt.NDArray[np.str_]:
    labels = np.asarray(
        one_per_row(arm, "arm", size=rows, against=f"X has {rows} rows", per="row of X")
    ).astype(str)
    found = sorted(set(labels.tolist()) - {control})
    if control not in set(labels.tolist()) or not found:
        raise ConfigError(
            f"arm must name the control ({control!r}) and at least one treatment arm for some "
            f"rows; got {sorted(set(labels.tolist()))[:6]}. Pass the offer each customer got, "
            "and control= the label of those who got none",
            setting="arm",
        )
    return labels


def arm_effects(
    y: ArrayLike, arm: ArrayLike, *, control: str = "control", alpha: float = 0.05
) -> dict[str, DiffResult]:
    """Return each treatment arm's effect on the response rate against the control, with its
    (1 - alpha) Newcombe interval (`proportions.two_proportion_diff`), arms in sorted order."""
    labels = np.asarray(arm).astype(str)
    yy = outcome_labels(y, "y", labels.size)
    labels = _arms(labels, labels.size, control)
    base = labels == control
    out = {}
    for name in sorted(set(labels.tolist()) - {control}):
        treated = labels == name
        out[name] = two_proportion_diff(
            int(yy[treated].sum()), int(treated.sum()), int(yy[base].sum()), int(base.sum()),
            alpha=alpha,
        )  # fmt: skip
    return out


class MultiArmUplift:
    """Several offers in one campaign: one uplift model per treatment arm against the control.

    Each arm's learner is fitted on that arm's rows and the control's, so every arm is judged
    against the same untreated customers; `predict` gives each arm's uplift per row and
    `best_arm` the offer with the largest (None where no offer's predicted uplift is positive).
    """

    def __init__(
        self,
        learner: str | type[UpliftModel] = "t_learner",
        *,
        params: BoosterConfig | None = None,
        control: str = "control",
    ) -> None:
        if isinstance(learner, str) and learner not in LEARNERS:
            raise ConfigError(
                f"unknown learner {learner!r}; choose one of {', '.join(LEARNERS)}",
                setting="learner",
            )
        self.learner = LEARNERS[learner] if isinstance(learner, str) else learner
        self.params = params
        self.control = control
        self.models: dict[str, UpliftModel] = {}

    def fit(self, X: Features, y: ArrayLike, arm: ArrayLike) -> Self:
        """Return the model fitted on a multi-arm trial: `arm` names each row's offer."""
        x, names = feature_matrix(X)
        labels = _arms(arm, x.shape[0], self.control)
        yy = outcome_labels(y, "y", x.shape[0])
        base = labels == self.control
        models = {}
        for name in sorted(set(labels.tolist()) - {self.control}):
            rows = base | (labels == name)
            part = (
                x[rows]
                if names is None
                else pl.DataFrame(x[rows], schema=list(names), orient="row")
            )
            models[name] = self.learner(params=self.params).fit(
                part, yy[rows], (labels[rows] == name).astype(np.float64)
            )
        self.models = models
        return self

    def predict(self, X: Features) -> dict[str, FloatArray]:
        """Return each arm's predicted uplift per row, arms in sorted order."""
        if not self.models:
            raise ConfigError("this MultiArmUplift is not fitted; call fit(X, y, arm) first")
        return {name: model.predict(X) for name, model in self.models.items()}

    def best_arm(self, X: Features) -> tuple[npt.NDArray[np.object_], FloatArray]:
        """Return per row the arm with the largest predicted uplift (None where none is
        positive) and that uplift."""
        predicted = self.predict(X)
        names = np.array(list(predicted), dtype=object)
        stacked = np.vstack(list(predicted.values()))
        top = stacked.argmax(axis=0)
        uplift: FloatArray = stacked[top, np.arange(stacked.shape[1])]
        best = np.full(top.size, None, dtype=object)
        positive = uplift > 0
        best[positive] = names[top[positive]]
        return best, uplift

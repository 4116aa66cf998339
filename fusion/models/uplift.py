"""Uplift models on xgboost: T-learner, X-learner and class transformation.

Vocabulary follows scikit-uplift: `fit(X, y, treatment)` returns the model, `predict(X)` the
predicted uplift P(y=1 | x, treated) - P(y=1 | x, control) per row. `X` is any numeric frame:
a polars or pandas DataFrame or a 2-D numpy array, booleans allowed, nulls and NaN left to
xgboost's missing-value handling. A model fitted on a frame keeps its column names and `predict`
picks the columns by name (order free, extra columns ignored, a missing one refused); a model
fitted on an array, or given an array, matches columns by position.

Every booster is trained by `xgboost.train` with `tree_method="hist"` from one frozen
`fusion.models.booster.BoosterConfig` (default `UPLIFT_BOOSTER`); for a given seed and thread
count the predictions are identical run to run. `fit(..., client=...)` trains them on a Dask
cluster instead (`fusion.models.distributed`). Judging the predictions and spending a budget with
them is `fusion.models.targeting`.

Bad input raises `contracts.errors.ConfigError` naming the argument and what to pass instead.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
import polars as pl
import xgboost as xgb
from scipy import stats

from contracts.errors import ConfigError
from fusion.models.booster import UPLIFT_BOOSTER, BoosterConfig, is_int
from fusion.models.distributed import Rows, train_booster
from fusion.models.uplift_inputs import (
    Features,
    feature_matrix,
    row_weights,
    trial_arrays,
)

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "LEARNERS",
    "ClassTransformation",
    "LearnerQini",
    "Selection",
    "TLearner",
    "UpliftModel",
    "XLearner",
    "cross_fitted_qini",
    "load_uplift_model",
    "qini_interval",
]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Early stopping needs a validation split big enough that its loss is not noise; below these
# sizes a booster trains all `n_estimators` rounds on every row instead.
_MIN_VALIDATION_ROWS = 100
_MIN_VALIDATION_MINORITY = 10
_BOOTSTRAPS = 200  # replicates of a cross-fitted Qini's interval, drawn in blocks (memory)
_BOOTSTRAP_BLOCK = 25


# --- boosters ----------------------------------------------------------------------------------


def _xgb_params(params: BoosterConfig, objective: str) -> dict[str, Any]:
    metric = "logloss" if objective == "binary:logistic" else "rmse"
    return {**params.params(objective=objective, eval_metric=metric), "verbosity": 0}


def _validation_rows(label: FloatArray, classify: bool, params: BoosterConfig) -> IntArray | None:
    """Return the rows held out for early stopping, or None when it is off or the data too small."""
    if params.early_stopping_rounds is None:
        return None
    rng = np.random.default_rng(params.seed)
    if not classify:
        size = round(label.size * params.validation_fraction)
        if size < _MIN_VALIDATION_ROWS:
            return None
        return np.sort(rng.permutation(label.size)[:size]).astype(np.int64)
    held: list[IntArray] = []
    for cls in (0.0, 1.0):
        rows = np.flatnonzero(label == cls)
        size = round(rows.size * params.validation_fraction)
        if size < _MIN_VALIDATION_MINORITY:
            return None
        held.append(rng.permutation(rows)[:size])
    out = np.sort(np.concatenate(held)).astype(np.int64)
    return out if out.size >= _MIN_VALIDATION_ROWS else None


def _train(
    x: FloatArray,
    label: FloatArray,
    *,
    objective: Literal["binary:logistic", "reg:squarederror"],
    params: BoosterConfig,
    weight: FloatArray | None = None,
    client: Client | None = None,
) -> xgb.Booster:
    """Return a booster fitted on (x, label), early-stopped on a held-out split when it can be."""
    config = _xgb_params(params, objective)
    held = _validation_rows(label, objective == "binary:logistic", params)
    if held is None:
        return train_booster(
            config, Rows(x, label, weight), rounds=params.n_estimators, client=client
        )
    keep = np.ones(label.size, dtype=bool)
    keep[held] = False
    return train_booster(
        config,
        Rows(x[keep], label[keep], None if weight is None else weight[keep]),
        rounds=params.n_estimators,
        valid=Rows(x[held], label[held], None if weight is None else weight[held]),
        early_stopping_rounds=params.early_stopping_rounds,
        client=client,
    )


# --- the learners -------------------------------------------------------------------------------


class UpliftModel(ABC):
    """Base of the uplift learners: shared input checking, column matching and fitted state.

    Subclasses implement `_fit(x, y, treatment, client) -> boosters` and `_predict(x) -> uplift` on
    checked float matrices; `_weight` holds the rows' sample weights while `_fit` runs (None: all
    rows count once).
    """

    def __init__(self, *, params: BoosterConfig | None = None) -> None:
        self.params = params if params is not None else UPLIFT_BOOSTER
        self._boosters: dict[str, xgb.Booster] = {}
        self._names: tuple[str, ...] | None = None
        self._width = 0
        self._weight: FloatArray | None = None

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """The column names seen by `fit`, or None when it was given an array."""
        self._check_fitted()
        return self._names

    @property
    def rounds(self) -> dict[str, int]:
        """Boosting rounds kept per inner booster (fewer than n_estimators after early stopping)."""
        self._check_fitted()
        return {name: b.num_boosted_rounds() for name, b in self._boosters.items()}

    def fit(
        self,
        X: Features,
        y: ArrayLike,
        treatment: ArrayLike,
        *,
        sample_weight: ArrayLike | None = None,
        client: Client | None = None,
    ) -> Self:
        """Return the model fitted on a randomised trial.

        Args:
            X: numeric features, one row per customer (polars/pandas DataFrame or 2-d array).
            y: 0/1 outcome per row.
            treatment: 1 = treated (contacted), 0 = control; both arms need both outcomes.
            sample_weight: a weight per row (finite, > 0), e.g. inverse propensities when the
                treated share differed between the trial's strata; None counts every row once.
            client: a Dask client to fit every inner booster on its cluster; None fits here.
        """
        x, names = feature_matrix(X)
        yy, tt = trial_arrays(y, treatment, x.shape[0])
        self._weight = None if sample_weight is None else row_weights(sample_weight, x.shape[0])
        try:
            self._boosters = self._fit(x, yy, tt, client)
        finally:
            self._weight = None
        self._names, self._width = names, x.shape[1]
        return self

    def predict(self, X: Features) -> FloatArray:
        """Return the predicted uplift per row, P(y=1 | treated) - P(y=1 | control), in [-1, 1]."""
        return self._predict(self._aligned(X))

    def to_state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Return the fitted model as JSON-ready metadata and one xgboost JSON document per booster.

        `load_uplift_model(metadata, boosters)` rebuilds it; no pickles, so a registry can store
        and read models without running code from the files.
        """
        self._check_fitted()
        metadata = {
            "learner": type(self).__name__,
            "params": asdict(self.params),
            "feature_names": None if self._names is None else list(self._names),
            "width": self._width,
            "extra": self._extra_state(),
        }
        boosters = {name: bytes(b.save_raw("json")) for name, b in self._boosters.items()}
        return metadata, boosters

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _restore_extra(self, extra: Mapping[str, Any]) -> None:
        del extra

    def _check_fitted(self) -> None:
        if not self._boosters:
            raise ConfigError(
                f"this {type(self).__name__} is not fitted; call fit(X, y, treatment) first"
            )

    def _aligned(self, X: Features) -> FloatArray:
        """Return X's matrix with the columns in the order `fit` saw them."""
        self._check_fitted()
        if self._names is not None and isinstance(X, pl.DataFrame | pd.DataFrame):
            present = {str(c) for c in X.columns}
            missing = [n for n in self._names if n not in present]
            if missing:
                raise ConfigError(
                    f"X lacks {len(missing)} column(s) the model was fitted on: {missing[:5]}; "
                    "build the features as for fit",
                    setting="X",
                )
            if isinstance(X, pl.DataFrame):
                X = X.select(self._names)
            else:
                by_name = {str(c): c for c in X.columns}
                X = X.loc[:, [by_name[n] for n in self._names]]
        x, _ = feature_matrix(X)
        if x.shape[1] != self._width:
            raise ConfigError(
                f"X has {x.shape[1]} columns but the model was fitted on {self._width}; "
                "pass the same features (an array is matched by position)",
                setting="X",
            )
        return x

    @abstractmethod
    def _fit(
        self, x: FloatArray, y: FloatArray, t: FloatArray, client: Client | None
    ) -> dict[str, xgb.Booster]: ...

    @abstractmethod
    def _predict(self, x: FloatArray) -> FloatArray: ...


def _output(booster: xgb.Booster, x: FloatArray) -> FloatArray:
    """Return the booster's prediction: a probability for a classifier, a value for a regressor."""
    return np.asarray(booster.inplace_predict(x), dtype=np.float64)


class TLearner(UpliftModel):
    """Two-model uplift: one response classifier per arm, uplift = p_treatment - p_control.

    Simple and unbiased in a randomised trial, but each model spends its capacity on the response
    level rather than on the (usually much smaller) difference, so the difference is noisy.

    References:
        Athey, S. & Imbens, G. W. (2015). Machine learning methods for estimating heterogeneous
        causal effects. arXiv:1504.01132 (the two-model estimator as a baseline).
        Künzel, S. R., Sekhon, J. S., Bickel, P. J. & Yu, B. (2019). Metalearners for estimating
        heterogeneous treatment effects using machine learning. PNAS 116(10), 4156-4165.
    """

    def _fit(
        self, x: FloatArray, y: FloatArray, t: FloatArray, client: Client | None
    ) -> dict[str, xgb.Booster]:
        classify = partial(_train, objective="binary:logistic", params=self.params, client=client)
        w = self._weight
        return {
            arm: classify(x[t == flag], y[t == flag], weight=None if w is None else w[t == flag])
            for arm, flag in (("control", 0.0), ("treatment", 1.0))
        }

    def predict_arms(self, X: Features) -> tuple[FloatArray, FloatArray]:
        """Return (P(y=1 | x, control), P(y=1 | x, treated)) per row."""
        x = self._aligned(X)
        return _output(self._boosters["control"], x), _output(self._boosters["treatment"], x)

    def _predict(self, x: FloatArray) -> FloatArray:
        return _output(self._boosters["treatment"], x) - _output(self._boosters["control"], x)


class XLearner(UpliftModel):
    """X-learner: per-arm outcome models, then regressions of the imputed individual effects.

    Stage 1 fits mu0 on the control and mu1 on the treated. Stage 2 imputes each customer's effect
    from the other arm's model - D1 = y - mu0(x) for the treated, D0 = mu1(x) - y for the control -
    and regresses them (tau1 on the treated, tau0 on the control). The uplift is
    g tau0(x) + (1 - g) tau1(x), g the propensity: so the arm with more data, whose model of the
    other arm's response is better, carries more weight. In a randomised trial g is the constant
    treated share; pass `propensity` when the assignment probability is known, else the observed
    share is used.

    References:
        Künzel, S. R., Sekhon, J. S., Bickel, P. J. & Yu, B. (2019). Metalearners for estimating
        heterogeneous treatment effects using machine learning. PNAS 116(10), 4156-4165.
    """

    def __init__(
        self, *, params: BoosterConfig | None = None, propensity: float | None = None
    ) -> None:
        if propensity is not None and not 0 < propensity < 1:
            raise ConfigError(
                f"propensity must be the probability of treatment, in (0, 1), got {propensity!r}; "
                "pass None to use the observed treated share",
                setting="propensity",
            )
        super().__init__(params=params)
        self.propensity = propensity
        self._g = math.nan
        # Stage-1 outcome models fitted already on the same rows, weights and params (a
        # T-learner's two arms are exactly mu0 and mu1): `_sharing_outcome_models`.
        self._stage_one: dict[str, xgb.Booster] | None = None

    def _fit(
        self, x: FloatArray, y: FloatArray, t: FloatArray, client: Client | None
    ) -> dict[str, xgb.Booster]:
        treated, control = t == 1, t == 0
        classify = partial(_train, objective="binary:logistic", params=self.params, client=client)
        regress = partial(_train, objective="reg:squarederror", params=self.params, client=client)
        w1, w0 = (
            (None, None) if self._weight is None else (self._weight[treated], self._weight[control])
        )
        if self._stage_one is not None:
            mu0, mu1 = self._stage_one["mu0"], self._stage_one["mu1"]
        else:
            mu0 = classify(x[control], y[control], weight=w0)
            mu1 = classify(x[treated], y[treated], weight=w1)
        d1 = y[treated] - _output(mu0, x[treated])
        d0 = _output(mu1, x[control]) - y[control]
        tau1 = regress(x[treated], d1, weight=w1)
        tau0 = regress(x[control], d0, weight=w0)
        self._g = self.propensity if self.propensity is not None else float(t.mean())
        return {"mu0": mu0, "mu1": mu1, "tau0": tau0, "tau1": tau1}

    def _extra_state(self) -> dict[str, Any]:
        return {"g": self._g}

    def _restore_extra(self, extra: Mapping[str, Any]) -> None:
        self._g = float(extra["g"])

    def _predict(self, x: FloatArray) -> FloatArray:
        tau0 = _output(self._boosters["tau0"], x)
        tau1 = _output(self._boosters["tau1"], x)
        # Squared-error boosters are not bounded like probabilities; an effect on a 0/1 outcome is.
        return np.clip(self._g * tau0 + (1.0 - self._g) * tau1, -1.0, 1.0)


class ClassTransformation(UpliftModel):
    """Class transformation: uplift = 2 P(z=1) - 1 from one classifier of z = y t + (1 - y)(1 - t).

    The identity holds when P(t=1) = 1/2. For any other treated share the rows are reweighted -
    treated by 1 / (2 share), control by 1 / (2 (1 - share)) - so that the two arms weigh the same
    (the weights average 1, keeping `min_child_weight` on its usual scale), which restores it.

    References:
        Jaskowski, M. & Jaroszewicz, S. (2012). Uplift modeling for clinical trial data. ICML 2012
        Workshop on Clinical Data Analysis.
    """

    def _fit(
        self, x: FloatArray, y: FloatArray, t: FloatArray, client: Client | None
    ) -> dict[str, xgb.Booster]:
        z = y * t + (1.0 - y) * (1.0 - t)
        w = np.ones_like(t) if self._weight is None else self._weight
        # The arms' weighted shares: with inverse-propensity sample weights they are balanced.
        share = float((w * t).sum() / w.sum())
        weight = w * np.where(t == 1, 0.5 / share, 0.5 / (1.0 - share))
        booster = _train(
            x, z, objective="binary:logistic", params=self.params, weight=weight, client=client
        )
        return {"z": booster}

    def _predict(self, x: FloatArray) -> FloatArray:
        return 2.0 * _output(self._boosters["z"], x) - 1.0


LEARNERS: dict[str, type[UpliftModel]] = {
    "t_learner": TLearner,
    "x_learner": XLearner,
    "class_transformation": ClassTransformation,
}


def load_uplift_model(metadata: Mapping[str, Any], boosters: Mapping[str, bytes]) -> UpliftModel:
    """Return the model that `UpliftModel.to_state()` described."""
    classes = {cls.__name__: cls for cls in LEARNERS.values()}
    learner = classes.get(str(metadata.get("learner")))
    if learner is None:
        raise ConfigError(
            f"unknown uplift learner {metadata.get('learner')!r}; expected one of "
            f"{', '.join(sorted(classes))}. Was the artifact written by a newer version?",
            setting="learner",
        )
    model = learner(params=BoosterConfig.from_dict(metadata["params"]))
    for name, document in boosters.items():
        booster = xgb.Booster()
        booster.load_model(bytearray(document))
        model._boosters[name] = booster
    names = metadata.get("feature_names")
    model._names = None if names is None else tuple(names)
    model._width = int(metadata["width"])
    model._restore_extra(metadata.get("extra", {}))
    return model


# --- cross-fitted learner choice ----------------------------------------------------------------


@dataclass(frozen=True)
class LearnerQini:
    """One learner's cross-fitted Qini coefficient, its interval, each fold's own Qini, and its
    paired difference from the baseline learner (None for the baseline itself)."""

    learner: str
    folds: tuple[float, ...]
    qini: float
    ci_low: float
    ci_high: float
    vs_baseline: tuple[float, float, float] | None = None  # difference, its interval

    @property
    def supported(self) -> bool:
        """Return whether the interval clears zero: the learner ranks better than random."""
        return self.ci_low > 0

    @property
    def beats_baseline(self) -> bool:
        """Return whether the paired interval of the difference from the baseline clears zero."""
        return self.vs_baseline is not None and self.vs_baseline[1] > 0


@dataclass(frozen=True)
class Selection:
    """The learner chosen by cross-fitted Qini, or None when no learner's interval clears zero.

    The baseline learner is kept unless another beats it with the paired interval of the
    difference; when the baseline's own interval does not clear zero, the best of those whose
    interval does is taken.
    """

    scores: dict[str, LearnerQini]
    best: str | None
    folds: int
    alpha: float
    baseline: str | None = None

    @property
    def supported(self) -> bool:
        """Return whether targeting by uplift is supported by the data."""
        return self.best is not None

    @property
    def verdict(self) -> str:
        """Return the choice in words, or why targeting by uplift is not supported."""
        top = max(self.scores.values(), key=lambda s: s.qini)
        level = f"{1 - 2 * self.alpha / len(self.scores):.0%}"
        if self.best is None:
            return (
                f"targeting by uplift is not supported by the data: no learner's cross-fitted "
                f"Qini has a {level} interval above zero (best {top.learner}: {top.qini:.3f}, "
                f"{top.ci_low:.3f} to {top.ci_high:.3f}); target by response or at random"
            )
        chosen = self.scores[self.best]
        why = ""
        if self.baseline is not None and self.best == self.baseline and len(self.scores) > 1:
            why = f"; no other learner beats {self.baseline} with its interval"
        elif chosen.vs_baseline is not None and chosen.beats_baseline:
            diff, low, high = chosen.vs_baseline
            why = f"; beats {self.baseline} by {diff:+.3f} ({low:+.3f} to {high:+.3f})"
        return (
            f"{self.best}: cross-fitted Qini {chosen.qini:.3f} ({level} interval "
            f"{chosen.ci_low:.3f} to {chosen.ci_high:.3f}, {self.folds} folds){why}"
        )


def _fold_of(y: FloatArray, t: FloatArray, folds: int, seed: int) -> IntArray:
    """Return a fold per row, stratified by arm and outcome so every fold has responders of both
    arms (a random permutation of each stratum dealt round-robin)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=np.int64)
    for arm in (0.0, 1.0):
        for outcome in (0.0, 1.0):
            rows = rng.permutation(np.flatnonzero((t == arm) & (y == outcome)))
            if outcome == 1.0 and rows.size < folds:
                raise ConfigError(
                    f"the {'treatment' if arm else 'control'} arm has {rows.size} responders; "
                    f"{folds}-fold cross-fitting needs at least one per fold - use fewer folds "
                    "or a larger sample",
                    setting="folds",
                )
            fold[rows] = np.arange(rows.size) % folds
    return fold


def _qini_replicates(
    y: FloatArray, u: FloatArray, t: FloatArray, weights: FloatArray
) -> FloatArray:
    """Return the Qini area above the random line for each row of `weights` (one replicate a
    row): the curve of `metrics.qini_curve` with every customer counted `weight` times."""
    order = np.argsort(-u, kind="stable")
    w = weights[:, order]
    ys, ts = y[order], t[order]
    n_t, n_c = np.cumsum(w * ts, axis=1), np.cumsum(w * (1 - ts), axis=1)
    y_t, y_c = np.cumsum(w * ys * ts, axis=1), np.cumsum(w * ys * (1 - ts), axis=1)
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c > 0)
    q = np.hstack([np.zeros((w.shape[0], 1)), y_t - y_c * ratio])
    x = np.hstack([np.zeros((w.shape[0], 1)), np.cumsum(w, axis=1)])
    area = np.sum(np.diff(x, axis=1) * (q[:, 1:] + q[:, :-1]) / 2.0, axis=1)
    return np.asarray(area - x[:, -1] * q[:, -1] / 2.0, dtype=np.float64)


def _bootstrap_qini(
    y: FloatArray, ranked: Mapping[str, FloatArray], t: FloatArray, points: Mapping[str, float],
    seed: int,
) -> dict[str, FloatArray]:  # fmt: skip
    """Return each learner's Qini coefficient over the same Poisson-bootstrap replicates
    (Hanley & MacGibbon 2006): each replicate counts every customer Poisson(1) times, the same
    counts for every learner, so differences between learners are paired.
    Each replicate's area is put on the coefficient's scale by the point estimate's own ratio of
    coefficient to area, so the replicates are those of the normalised Qini."""
    rng = np.random.default_rng(seed)
    blocks = [
        rng.poisson(1.0, (_BOOTSTRAP_BLOCK, y.size)).astype(float)
        for _ in range(_BOOTSTRAPS // _BOOTSTRAP_BLOCK)
    ]
    out = {}
    for name, u in ranked.items():
        raw = _qini_replicates(y, u, t, np.ones((1, y.size)))[0]
        scale = points[name] / raw if raw != 0 else 0.0
        out[name] = np.concatenate([_qini_replicates(y, u, t, w) for w in blocks]) * scale
    return out


def qini_interval(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, *, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Return the Qini coefficient of `uplift` on a trial and its (1 - 2 alpha) Poisson-bootstrap
    percentile interval: (qini, low, high)."""
    from fusion.models.metrics import qini_auc_score

    if not 0 < alpha < 0.5:
        raise ConfigError(
            f"alpha must be in (0, 0.5), got {alpha!r}; 0.025 gives 95%", setting="alpha"
        )
    u = np.asarray(uplift, dtype=np.float64)
    yy, tt = trial_arrays(y, treatment, u.size)
    point = qini_auc_score(yy, u, tt)
    replicates = _bootstrap_qini(yy, {"u": u}, tt, {"u": point}, seed)["u"]
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return point, float(low), float(high)


def _cross_fitted_ranks(
    learner: type[UpliftModel], x: FloatArray, y: FloatArray, t: FloatArray, fold: IntArray,
    params: BoosterConfig | None, weight: FloatArray | None, client: Client | None,
    shared: dict[int, UpliftModel] | None = None,
) -> tuple[FloatArray, FloatArray]:  # fmt: skip
    """Return each row's rank within its fold (0-1) by the model fitted on the other folds, and
    each fold's own Qini. `shared` (fold -> T-learner) carries the T-learner's fold models to
    the X-learner, whose stage-1 models they are; a T-learner's fold models are put in it."""
    from fusion.models.metrics import qini_auc_score

    folds = int(fold.max()) + 1
    ranked = np.empty(y.size)
    per_fold = np.empty(folds)
    fitted: dict[int, UpliftModel] = {}
    for k in range(folds):
        train, test = fold != k, fold == k
        model = learner(params=params)
        if shared is not None:
            _sharing_outcome_models(model, shared.get(k))
        model.fit(
            x[train], y[train], t[train], client=client,
            sample_weight=None if weight is None else weight[train],
        )  # fmt: skip
        fitted[k] = model
        predicted = model._predict(x[test])
        per_fold[k] = qini_auc_score(y[test], predicted, t[test])
        # Fold models differ in scale: ranks within the fold make them one ranking.
        ranked[test] = stats.rankdata(predicted) / predicted.size
    if shared is not None and isinstance(model, TLearner):
        shared.update(fitted)
    return ranked, per_fold


def _sharing_outcome_models(model: UpliftModel, donor: UpliftModel | None) -> None:
    """Let an X-learner take its stage-1 outcome models from a T-learner fitted on the same
    fold: mu0 and mu1 are the T-learner's two arms (the same rows, weights, params and seed give
    the same boosters), so each fold fits them once instead of twice."""
    if (
        isinstance(model, XLearner)
        and isinstance(donor, TLearner)
        and donor.params == model.params
        and donor._boosters
    ):
        model._stage_one = {
            "mu0": donor._boosters["control"],
            "mu1": donor._boosters["treatment"],
        }


def cross_fitted_qini(  # noqa: PLR0913 - keyword-only settings of one choice
    X: Features,
    y: ArrayLike,
    treatment: ArrayLike,
    *,
    learners: Mapping[str, type[UpliftModel]] | None = None,
    folds: int = 5,
    params: BoosterConfig | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    baseline: str | None = "t_learner",
    sample_weight: ArrayLike | None = None,
    client: Client | None = None,
) -> Selection:
    """Return the learner chosen by cross-fitted Qini with its interval, or none.

    Every learner is fitted `folds` times, each time on all folds but one, and predicts the fold
    it did not see; the folds are stratified by arm and outcome and the same for every learner.
    Each fold's predictions become ranks within the fold (fold models differ in scale), and the
    Qini coefficient of all rows so ranked is the learner's figure, with a Poisson-bootstrap
    percentile interval (1 - 2 alpha / L for L learners: its lower end is the one-sided test of
    "better than random", Bonferroni-corrected so that the chance of any learner clearing zero
    by luck stays under alpha). When no learner's interval clears zero, `Selection.best` is
    None: targeting by uplift is not supported by the data, and no learner is picked by noise.

    The `baseline` learner (the plain two-model T-learner unless told otherwise; None for the
    plain largest Qini) is kept unless another learner beats it: the paired bootstrap interval
    of their difference (the same replicates for both, one-sided 1 - alpha / (L - 1)) clears
    zero. On rare outcomes the learners' figures differ by less than their noise, and the
    largest of them is then a draw of that noise, not a better learner.

    `sample_weight` is passed to every fit; the Qini figures count every row once.

    References:
        Chernozhukov, V. et al. (2018). Double/debiased machine learning for treatment and
        structural parameters. The Econometrics Journal 21(1), C1-C68 (cross-fitting).
        Radcliffe, N. J. (2007). Using control groups to target on predicted lift. Direct
        Marketing Analytics Journal 1, 14-21 (the Qini coefficient).
        Hanley, J. A. & MacGibbon, B. (2006). Creating non-parametric bootstrap samples using
        Poisson frequencies. Computer Methods and Programs in Biomedicine 83(1), 57-62.
    """
    from fusion.models.metrics import qini_auc_score

    if not is_int(folds) or not 2 <= folds <= 20:
        raise ConfigError(f"folds must be an int in 2..20, got {folds!r}", setting="folds")
    if not 0 < alpha < 1:
        raise ConfigError(
            f"alpha must be in (0, 1), got {alpha!r}; 0.05 gives 95%", setting="alpha"
        )
    chosen = dict(learners if learners is not None else LEARNERS)
    if baseline is not None and baseline not in chosen:
        raise ConfigError(
            f"baseline {baseline!r} is not among the learners {sorted(chosen)}; name one of "
            "them or pass None",
            setting="baseline",
        )
    x, _ = feature_matrix(X)
    yy, tt = trial_arrays(y, treatment, x.shape[0])
    fold = _fold_of(yy, tt, folds, seed)
    weight = None if sample_weight is None else row_weights(sample_weight, x.shape[0])
    # The T-learner is fitted first, so the X-learner reuses its fold models as stage 1.
    order = sorted(chosen, key=lambda name: not issubclass(chosen[name], TLearner))
    shared: dict[int, UpliftModel] = {}
    fitted = {
        name: _cross_fitted_ranks(chosen[name], x, yy, tt, fold, params, weight, client, shared)
        for name in order
    }
    fitted = {name: fitted[name] for name in chosen}
    points = {name: qini_auc_score(yy, ranked, tt) for name, (ranked, _) in fitted.items()}
    replicates = _bootstrap_qini(yy, {n: r for n, (r, _) in fitted.items()}, tt, points, seed)
    # Bonferroni over the learners: the chance that any of them clears zero by luck alone
    # stays under alpha; over the challengers for beating the baseline.
    level, versus = alpha / len(chosen), alpha / max(len(chosen) - 1, 1)
    scores: dict[str, LearnerQini] = {}
    for name, (_, per_fold) in fitted.items():
        low, high = np.quantile(replicates[name], [level, 1 - level])
        diff = None
        if baseline is not None and name != baseline:
            gap = replicates[name] - replicates[baseline]
            d_low, d_high = np.quantile(gap, [versus, 1 - versus])
            diff = (points[name] - points[baseline], float(d_low), float(d_high))
        scores[name] = LearnerQini(
            name, tuple(float(q) for q in per_fold), points[name], float(low), float(high), diff
        )
    return Selection(scores, _choose(scores, baseline), folds, alpha, baseline)


def _choose(scores: Mapping[str, LearnerQini], baseline: str | None) -> str | None:
    """Return the baseline unless a supported learner beats it, else the best supported one."""
    supported = [s for s in scores.values() if s.supported]
    if not supported:
        return None
    if baseline is not None and scores[baseline].supported:
        supported = [scores[baseline], *(s for s in supported if s.beats_baseline)]
    return max(supported, key=lambda s: s.qini).learner

"""Uplift learners on a small trial that is not the world, and budgeted targeting by hand."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import polars as pl
import pytest

from contracts.errors import ConfigError
from fusion.models import uplift
from fusion.models.booster import UPLIFT_BOOSTER
from fusion.models.metrics import qini_auc_score
from fusion.models.targeting import Budget, budgeted_targeting, uplift_correlation
from fusion.models.uplift import ClassTransformation, TLearner, XLearner

LEARNERS = [TLearner, XLearner, ClassTransformation]
FAST = replace(
    UPLIFT_BOOSTER,
    n_estimators=50,
    max_depth=3,
    learning_rate=0.1,
    early_stopping_rounds=None,
    n_jobs=1,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _trial(
    n: int, seed: int, *, treated_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (X, y, treatment, true uplift): x1 drives who buys anyway, x0 > 0 who is swayed."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    t = (rng.random(n) < treated_share).astype(np.int64)
    base = -1.0 + 1.5 * x[:, 1]
    p_control = _sigmoid(base)
    p_treated = _sigmoid(base + 1.5 * (x[:, 0] > 0))
    y = (rng.random(n) < np.where(t == 1, p_treated, p_control)).astype(np.int64)
    return x, y, t, p_treated - p_control


@pytest.fixture(scope="module")
def trial() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return _trial(4000, 0)


@pytest.fixture(scope="module")
def holdout() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return _trial(2000, 1)


# --- learning -----------------------------------------------------------------------------------


@pytest.mark.parametrize("learner", LEARNERS)
def test_learner_recovers_heterogeneous_uplift(learner, trial, holdout):
    x, y, t, _ = trial
    x_new, y_new, t_new, truth = holdout
    model = learner(params=FAST).fit(x, y, t)
    predicted = model.predict(x_new)
    assert predicted.shape == (2000,) and predicted.dtype == np.float64
    assert np.all(np.abs(predicted) <= 1)
    assert uplift_correlation(predicted, truth) > 0.5
    assert uplift_correlation(predicted, truth, method="spearman") > 0.5
    assert qini_auc_score(y_new, predicted, t_new) > 0.05  # random ordering scores 0
    swayed = x_new[:, 0] > 0
    assert predicted[swayed].mean() > 0.15 > abs(predicted[~swayed].mean())


@pytest.mark.parametrize("learner", LEARNERS)
def test_state_round_trip_predicts_identically(learner, trial, holdout):
    x, y, t, _ = trial
    frame = pl.DataFrame(x, schema=[f"f{i}" for i in range(x.shape[1])])
    model = learner(params=FAST).fit(frame, y, t)
    metadata, boosters = model.to_state()
    json.dumps(metadata)  # JSON-ready
    again = uplift.load_uplift_model(json.loads(json.dumps(metadata)), boosters)
    assert type(again) is learner and again.feature_names == model.feature_names
    new = pl.DataFrame(holdout[0], schema=[f"f{i}" for i in range(x.shape[1])])
    np.testing.assert_array_equal(again.predict(new), model.predict(new))
    with pytest.raises(ConfigError, match="unknown uplift learner"):
        uplift.load_uplift_model({**metadata, "learner": "SLearner"}, boosters)


def test_a_model_saved_with_the_old_setting_names_still_loads(trial):
    x, y, t, _ = trial
    model = TLearner(params=FAST).fit(x, y, t)
    metadata, boosters = model.to_state()
    saved = dict(metadata["params"])
    # What an older version wrote: colsample for colsample_bytree, None for every core.
    saved["colsample"] = saved.pop("colsample_bytree")
    saved["n_jobs"] = None
    again = uplift.load_uplift_model({**metadata, "params": saved}, boosters)
    assert again.params == replace(FAST, n_jobs=0)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))


def test_uplift_targeting_beats_response_targeting(trial, holdout):
    x, y, t, _ = trial
    x_new, y_new, t_new, truth = holdout
    model = TLearner(params=FAST).fit(x, y, t)
    _, p_treated = model.predict_arms(x_new)
    results = budgeted_targeting(
        {"uplift": model.predict(x_new), "response": p_treated},
        budget=Budget(contacts=600, cost_per_contact=1.0, value_per_conversion=10.0),  # 30%
        true_uplift=truth,
        y=y_new,
        treatment=t_new,
        baseline="response",
    )
    assert results["uplift"].ratio is not None and results["uplift"].ratio >= 1.2
    assert results["response"].ratio == 1.0
    for result in results.values():
        assert result.estimated_ci is not None
        low, high = result.estimated_ci
        assert low < result.estimated_incremental < high  # type: ignore[operator]


def test_t_learner_arms_are_probabilities_whose_difference_is_the_uplift(trial):
    x, y, t, _ = trial
    model = TLearner(params=FAST).fit(x, y, t)
    p_control, p_treated = model.predict_arms(x[:500])
    assert np.all((p_control > 0) & (p_control < 1) & (p_treated > 0) & (p_treated < 1))
    np.testing.assert_array_equal(model.predict(x[:500]), p_treated - p_control)
    assert set(model.rounds) == {"control", "treatment"}


def test_x_learner_mixes_its_effect_models_by_propensity(trial):
    x, y, t, _ = trial
    at = {g: XLearner(params=FAST, propensity=g).fit(x, y, t).predict(x[:500]) for g in (0.2, 0.8)}
    middle = XLearner(params=FAST, propensity=0.5).fit(x, y, t).predict(x[:500])
    # g tau0 + (1 - g) tau1 is linear in g, and the boosters do not depend on g
    np.testing.assert_allclose(middle, (at[0.2] + at[0.8]) / 2, atol=1e-6)


@pytest.mark.parametrize("propensity", [0.0, 1.0, -0.1, 1.5])
def test_x_learner_refuses_a_propensity_outside_0_1(propensity):
    with pytest.raises(ConfigError, match="propensity") as caught:
        XLearner(propensity=propensity)
    assert caught.value.setting == "propensity"


def test_class_transformation_reweights_unbalanced_arms():
    x, y, t, truth = _trial(4000, 2, treated_share=0.2)
    predicted = ClassTransformation(params=FAST).fit(x, y, t).predict(x)
    swayed = x[:, 0] > 0
    # unweighted, 2 P(z=1) - 1 would sit near +0.3 for everyone here (z=1 is mostly control
    # non-responders); weighted, the unswayed half sits near 0
    assert abs(predicted[~swayed].mean()) < 0.1
    assert predicted[swayed].mean() > 0.15
    assert uplift_correlation(predicted, truth) > 0.5


# --- inputs -------------------------------------------------------------------------------------


def _mixed_frame(seed: int) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Return a polars frame with nulls and a boolean column, and y, treatment for it."""
    x, y, t, _ = _trial(1500, seed)
    frame = pl.DataFrame(
        {
            "swayed": x[:, 0],
            "buyer": x[:, 1],
            "noise": np.where(x[:, 2] > 1.0, np.nan, x[:, 2]),
            "flag": x[:, 3] > 0,
            "count": np.round(np.abs(x[:, 4]) * 3).astype(np.int64),
        }
    ).with_columns(pl.when(pl.col("count") == 2).then(None).otherwise(pl.col("count")))
    return frame, y, t


@pytest.mark.parametrize("learner", LEARNERS)
def test_polars_pandas_and_numpy_give_identical_predictions(learner):
    frame, y, t = _mixed_frame(3)
    as_pandas = frame.to_pandas(use_pyarrow_extension_array=False)
    as_numpy = frame.select(pl.all().cast(pl.Float64)).to_numpy()
    models = {
        kind: learner(params=FAST).fit(data, y, t)
        for kind, data in (("polars", frame), ("pandas", as_pandas), ("numpy", as_numpy))
    }
    expected = models["polars"].predict(frame)
    for model in models.values():
        for data in (frame, as_pandas, as_numpy):
            np.testing.assert_array_equal(model.predict(data), expected)
    assert models["polars"].feature_names == tuple(frame.columns)
    assert models["pandas"].feature_names == tuple(frame.columns)
    assert models["numpy"].feature_names is None


def test_pandas_nullable_dtypes_are_read_as_missing():
    frame, y, t = _mixed_frame(3)
    plain = frame.to_pandas(use_pyarrow_extension_array=False)
    nullable = plain.astype({"count": "Int64", "flag": "boolean"})
    model = TLearner(params=FAST).fit(plain, y, t)
    np.testing.assert_array_equal(model.predict(nullable), model.predict(plain))


def test_predict_matches_columns_by_name():
    frame, y, t = _mixed_frame(4)
    model = TLearner(params=FAST).fit(frame, y, t)
    expected = model.predict(frame)
    shuffled = frame.select(reversed(frame.columns)).with_columns(extra=pl.lit(7.0))
    np.testing.assert_array_equal(model.predict(shuffled), expected)
    np.testing.assert_array_equal(model.predict(shuffled.to_pandas()), expected)


@pytest.mark.parametrize("to_frame", [lambda f: f, lambda f: f.to_pandas()])
def test_predict_refuses_a_missing_column(to_frame):
    frame, y, t = _mixed_frame(4)
    model = XLearner(params=FAST).fit(frame, y, t)
    with pytest.raises(ConfigError, match=r"lacks 1 column.*'noise'") as caught:
        model.predict(to_frame(frame.drop("noise")))
    assert caught.value.setting == "X"


def test_predict_refuses_an_array_of_the_wrong_width(trial):
    x, y, t, _ = trial
    model = ClassTransformation(params=FAST).fit(x, y, t)
    with pytest.raises(ConfigError, match="4 columns but the model was fitted on 5"):
        model.predict(x[:, :4])


@pytest.mark.parametrize("learner", LEARNERS)
def test_predict_before_fit_is_refused(learner):
    with pytest.raises(ConfigError, match=r"not fitted; call fit\(X, y, treatment\)"):
        learner().predict(np.zeros((3, 2)))


def _bad_inputs() -> list[tuple[str, object, object, object, str]]:
    x, y, t, _ = _trial(400, 5)
    strings = pl.DataFrame({"a": x[:, 0], "city": ["x"] * 400})
    infinite = x.copy()
    infinite[7, 2] = np.inf
    one_outcome_in_control = np.where(t == 0, 0, y)
    return [
        ("single arm", x, y, np.ones(400, dtype=np.int64), "control group is empty"),
        ("non-binary y", x, y * 2, t, "y must hold only 0 and 1"),
        ("y too short", x, y[:-1], t, "y has 399 values but X has 400 rows"),
        ("treatment too long", x, y, np.r_[t, 1], "treatment has 401 values"),
        ("nan treatment", x, y, np.where(t == 1, 1.0, np.nan), "treatment must hold only 0 and 1"),
        ("string y", x, y.astype(str), t, "y must hold 0/1 labels"),
        ("one outcome in an arm", x, one_outcome_in_control, t, "control group's .* all have y=0"),
        ("string column", strings, y, t, r"numeric or boolean columns only.*city \(String\)"),
        ("1-d X", x[:, 0], y, t, "X must be 2-d"),
        ("empty X", x[:, :0], y, t, "pass at least one row and one feature"),
        ("infinite X", infinite, y, t, "infinite value.*first at row 7, column 2"),
    ]


@pytest.mark.parametrize(
    ("x", "y", "t", "message"),
    [case[1:] for case in _bad_inputs()],
    ids=[case[0] for case in _bad_inputs()],
)
def test_fit_refuses_bad_input(x, y, t, message):
    with pytest.raises(ConfigError, match=message):
        TLearner(params=FAST).fit(x, y, t)


def test_fit_refuses_duplicate_pandas_columns():
    x, y, t, _ = _trial(400, 5)
    frame = pd.DataFrame(x[:, :2], columns=["a", "a"])
    with pytest.raises(ConfigError, match=r"duplicate column names \['a'\]"):
        ClassTransformation(params=FAST).fit(frame, y, t)


# --- booster settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("learner", LEARNERS)
def test_same_seed_gives_identical_predictions(learner, trial):
    x, y, t, _ = trial
    params = replace(
        UPLIFT_BOOSTER, n_estimators=30, subsample=0.7, colsample_bytree=0.6, seed=11, n_jobs=2
    )
    first = learner(params=params).fit(x, y, t).predict(x)
    again = learner(params=params).fit(x, y, t).predict(x)
    other = learner(params=replace(params, seed=12))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other.fit(x, y, t).predict(x))


def test_early_stopping_keeps_the_best_round_and_is_off_for_tiny_data(trial):
    x, y, t, _ = trial
    eager = replace(
        UPLIFT_BOOSTER, n_estimators=400, learning_rate=0.5, early_stopping_rounds=5, n_jobs=1
    )
    stopped = XLearner(params=eager).fit(x, y, t)
    assert set(stopped.rounds) == {"mu0", "mu1", "tau0", "tau1"}
    assert all(1 <= r < 400 for r in stopped.rounds.values())
    tiny = XLearner(params=eager).fit(x[:300], y[:300], t[:300])
    assert all(r == 400 for r in tiny.rounds.values())


@pytest.mark.parametrize("learner", LEARNERS)
def test_unit_sample_weights_change_nothing_and_bad_ones_are_refused(learner, trial):
    x, y, t, _ = trial
    plain = learner(params=FAST).fit(x, y, t).predict(x[:50])
    ones = learner(params=FAST).fit(x, y, t, sample_weight=np.ones(len(y))).predict(x[:50])
    assert np.array_equal(plain, ones)
    tilted = np.where(x[:, 2] > 0, 3.0, 1.0)  # a weight the outcomes do not depend on
    assert not np.array_equal(
        plain, learner(params=FAST).fit(x, y, t, sample_weight=tilted).predict(x[:50])
    )
    for bad in (np.zeros(len(y)), np.full(len(y), np.nan), np.ones(3)):
        with pytest.raises(ConfigError, match="sample_weight"):
            learner(params=FAST).fit(x, y, t, sample_weight=bad)

"""Cross-fitted choice of an uplift learner and several treatment arms, on synthetic trials that
are not the world: rare outcomes, weak and heterogeneous effects, against a plain T-learner."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from contracts.errors import ConfigError
from fusion.models.booster import UPLIFT_BOOSTER
from fusion.models.metrics import qini_auc_score
from fusion.models.uplift import (
    LEARNERS,
    TLearner,
    cross_fitted_qini,
)
from fusion.models.uplift_arms import MultiArmUplift, arm_effects
from tests.support.models import rare_trial

FAST = replace(
    UPLIFT_BOOSTER,
    n_estimators=60,
    max_depth=3,
    learning_rate=0.1,
    min_child_weight=5.0,
    early_stopping_rounds=None,
    n_jobs=1,
)


@pytest.mark.slow
def test_a_real_heterogeneous_effect_is_supported_the_same_way_every_time():
    x, y, t, _ = rare_trial(6_000, 1, base=0.03, effect=0.08)
    chosen = cross_fitted_qini(x, y, t, params=FAST, folds=3, seed=4)
    assert chosen.supported and chosen.best in LEARNERS
    best = chosen.scores[chosen.best]
    assert 0 < best.ci_low < best.qini < best.ci_high and len(best.folds) == 3
    # The T-learner is kept unless another learner beats it with the paired interval.
    plain = chosen.scores["t_learner"]
    assert plain.vs_baseline is None and chosen.baseline == "t_learner"
    for other in (s for s in chosen.scores.values() if s.learner != "t_learner"):
        assert other.vs_baseline is not None
        diff, low, high = other.vs_baseline
        assert diff == pytest.approx(other.qini - plain.qini) and low < high
        assert other.beats_baseline == (low > 0)
    winners = [s for s in chosen.scores.values() if s.supported and s.beats_baseline]
    assert chosen.best == max(winners, key=lambda s: s.qini).learner if winners else "t_learner"
    assert chosen.verdict.startswith(f"{chosen.best}: cross-fitted Qini")
    again = cross_fitted_qini(x, y, t, params=FAST, folds=3, seed=4)
    assert again.scores == chosen.scores


@pytest.mark.slow
def test_without_an_effect_targeting_by_uplift_is_said_to_be_unsupported():
    x, y, t, _ = rare_trial(6_000, 2, base=0.02, effect=0.0)
    chosen = cross_fitted_qini(x, y, t, params=FAST, folds=3, seed=0)
    assert chosen.best is None and not chosen.supported
    assert all(s.ci_low <= 0 for s in chosen.scores.values())
    assert "not supported by the data" in chosen.verdict


def test_cross_fitting_refuses_what_it_cannot_fold():
    x, y, t, _ = rare_trial(300, 3, base=0.01, effect=0.0)
    y[:] = 0
    y[np.flatnonzero(t == 1)[:2]] = 1
    y[np.flatnonzero(t == 0)[:5]] = 1
    with pytest.raises(ConfigError, match="2 responders"):
        cross_fitted_qini(x, y, t, params=FAST, folds=3)
    with pytest.raises(ConfigError, match="folds"):
        cross_fitted_qini(x, y, t, params=FAST, folds=1)


def test_each_arms_effect_has_newcombes_interval_as_statsmodels_computes_it():
    rng = np.random.default_rng(5)
    arm = rng.choice(["control", "sms", "call"], size=9_000, p=[0.4, 0.3, 0.3])
    rate = np.select([arm == "sms", arm == "call"], [0.03, 0.05], 0.02)
    y = (rng.random(arm.size) < rate).astype(int)
    effects = arm_effects(y, arm)
    assert list(effects) == ["call", "sms"]
    base = arm == "control"
    for name, effect in effects.items():
        treated = arm == name
        low, high = confint_proportions_2indep(
            y[treated].sum(), treated.sum(), y[base].sum(), base.sum(),
            method="newcomb", compare="diff",
        )  # fmt: skip
        assert abs(effect.ci_low - low) < 1e-9 and abs(effect.ci_high - high) < 1e-9
    with pytest.raises(ConfigError, match="control"):
        arm_effects(y, np.where(base, "holdout", arm))


def test_several_offers_each_find_the_customers_they_sway():
    rng = np.random.default_rng(6)
    n = 9_000
    x = rng.normal(size=(n, 4))
    arm = rng.choice(["control", "sms", "call"], size=n)
    swayed = np.select([arm == "sms", arm == "call"], [x[:, 0] > 0, x[:, 0] < 0], False)
    y = (rng.random(n) < 0.05 + 0.25 * swayed).astype(int)
    model = MultiArmUplift("t_learner", params=FAST).fit(x, y, arm)
    assert list(model.predict(x[:5])) == ["call", "sms"]
    best, uplift = model.best_arm(x)
    assert np.mean(best[x[:, 0] > 1] == "sms") > 0.9
    assert np.mean(best[x[:, 0] < -1] == "call") > 0.9
    assert np.all((best == None) == (uplift <= 0))  # noqa: E711 (element-wise)
    with pytest.raises(ConfigError, match="unknown learner"):
        MultiArmUplift("forest")


def _repeated_splits(
    splits: int, *, n: int, base: float, effect: float
) -> tuple[list[float], list[float], list[bool]]:
    """Return, per split (70/30) of a fresh rare trial, the test Qini of what the choice targets
    by, the test Qini of a plain two-model xgboost T-learner, and whether uplift was supported.

    What the choice targets by: the chosen learner refitted on the 70%, or - when targeting by
    uplift is not supported by the data - the response model the lists fall back to,
    P(y | x, offered) fitted on the offered rows (the T-learner's treated-arm booster).
    """
    chosen, baseline, supported = [], [], []
    for split in range(splits):
        x, y, t, _ = rare_trial(n, 100 + split, base=base, effect=effect)
        order = np.random.default_rng(split).permutation(y.size)
        fit, test = order[: int(0.7 * y.size)], order[int(0.7 * y.size) :]
        selection = cross_fitted_qini(x[fit], y[fit], t[fit], params=FAST, folds=3, seed=split)
        plain = TLearner(params=FAST).fit(x[fit], y[fit], t[fit])
        baseline.append(qini_auc_score(y[test], plain.predict(x[test]), t[test]))
        supported.append(selection.supported)
        if selection.best is None:
            score = plain.predict_arms(x[test])[1]
        elif selection.best == "t_learner":
            score = plain.predict(x[test])
        else:
            score = (
                LEARNERS[selection.best](params=FAST).fit(x[fit], y[fit], t[fit]).predict(x[test])
            )
        chosen.append(qini_auc_score(y[test], score, t[test]))
    return chosen, baseline, supported


@pytest.mark.slow
def test_on_rare_weak_effects_the_choice_is_never_worse_than_a_plain_t_learner():
    """About 1% convert, a weak heterogeneous effect (about +0.9 points on average, on the
    customers with x1 > -0.5), six splits: the choice against the plain T-learner."""
    chosen, baseline, supported = _repeated_splits(6, n=14_000, base=0.008, effect=0.012)
    pairs = list(zip(chosen, baseline, strict=True))
    assert not any(c < 0 < b for c, b in pairs), pairs
    # Where uplift is supported the choice is the T-learner, or a learner that beat it.
    kept = [(c, b) for (c, b), s in zip(pairs, supported, strict=True) if s]
    assert kept and np.mean([c for c, _ in kept]) >= np.mean([b for _, b in kept]), pairs
    # Abstaining (targeting by response) costs little on average against trusting the noise.
    assert np.mean(chosen) >= np.mean(baseline) - 0.01, pairs


@pytest.mark.slow
def test_over_repeated_splits_without_an_effect_the_choice_abstains():
    _, _, supported = _repeated_splits(4, n=14_000, base=0.012, effect=0.0)
    assert supported.count(False) >= 3, supported

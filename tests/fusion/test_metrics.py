"""Metrics against scikit-learn on random tied data, and against hand-worked uplift tables."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from contracts.errors import ConfigError
from fusion.models.metrics import (
    AucDiff,
    auc_difference,
    calibration_table,
    gains_table,
    ks_statistic,
    pr_auc,
    qini_auc_score,
    qini_curve,
    roc_auc,
    uplift_at_k,
    uplift_auc_score,
    uplift_by_decile,
    uplift_curve,
)


def _random_tied(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes present
    # few distinct values -> many ties; some signal so AUC is not ~0.5 everywhere
    score = np.round(y * rng.uniform(0, 1) + rng.normal(0, 1, n), int(rng.integers(0, 2)))
    return y, score


@pytest.mark.parametrize("seed", range(60))
def test_ranking_metrics_match_sklearn_with_ties(seed: int):
    y, score = _random_tied(seed)
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-9)
    assert pr_auc(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-9)
    fpr, tpr, _ = roc_curve(y, score)
    assert ks_statistic(y, score) == pytest.approx(np.max(np.abs(tpr - fpr)), abs=1e-9)


def test_ranking_metrics_on_a_hand_example():
    y = [0, 0, 1, 1]
    score = [0.1, 0.5, 0.5, 0.9]
    assert roc_auc(y, score) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert ks_statistic(y, score) == pytest.approx(0.5)  # after 0.9: TPR 0.5, FPR 0
    assert pr_auc(y, score) == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))


def test_gains_table_keeps_ties_in_one_decile():
    y = [1, 1, 0, 1, 0, 0, 0, 0, 0, 1]
    score = [9, 8, 8, 8, 5, 4, 3, 2, 1, 0]
    table = gains_table(y, score, bins=5)
    # the tie group at 8 (rows 1-3) starts at position 1 -> band 1 (positions 0-1), all of it
    assert table["decile"].to_list() == [1, 3, 4, 5]
    assert table["customers"].to_list() == [4, 2, 2, 2]
    assert table["responders"].to_list() == [3, 0, 0, 1]
    assert table["cum_responders"].to_list() == [3, 3, 3, 4]
    assert table["cum_gains"].to_list() == pytest.approx([0.75, 0.75, 0.75, 1.0])
    assert table["lift"].to_list() == pytest.approx([0.75 / 0.4, 0.0, 0.0, 0.5 / 0.4])
    assert table["cum_lift"][-1] == pytest.approx(1.0)


def test_calibration_table():
    y = [0, 1, 1, 0, 1]
    prob = [0.05, 0.15, 0.95, 1.0, 0.12]
    table = calibration_table(y, prob, bins=10)
    assert table["bin"].to_list() == [1, 2, 10]
    assert table["customers"].to_list() == [1, 2, 2]
    assert table["mean_predicted"].to_list() == pytest.approx([0.05, 0.135, 0.975])
    assert table["observed_rate"].to_list() == pytest.approx([0.0, 1.0, 0.5])


@pytest.mark.parametrize("bins", [3, 5, 10, 7])
def test_calibration_table_puts_edges_where_sklearn_does(bins: int):
    # Every edge, twice, as linspace makes it (0.30000000000000004) and as k / bins (0.3), plus
    # noise: on an inner edge calibration_curve takes the lower bin.
    rng = np.random.default_rng(bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    prob = np.r_[edges, np.arange(bins + 1) / bins, rng.uniform(size=50)]
    y = rng.integers(0, 2, prob.size)
    y[:2] = [0, 1]
    prob_true, prob_pred = calibration_curve(y, prob, n_bins=bins, strategy="uniform")
    table = calibration_table(y, prob, bins=bins)
    np.testing.assert_allclose(table["observed_rate"], prob_true, rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["mean_predicted"], prob_pred, rtol=0, atol=1e-12)
    assert table["customers"].sum() == prob.size
    low, high = table["prob_low"].to_numpy(), table["prob_high"].to_numpy()
    mean = table["mean_predicted"].to_numpy()
    assert np.all((low <= mean) & (mean <= high))


def test_calibration_table_edge_goes_to_the_lower_bin():
    table = calibration_table([0, 1, 1], [0.0, 0.5, 1.0], bins=2)
    assert table["bin"].to_list() == [1, 2]
    assert table["customers"].to_list() == [2, 1]
    assert table["prob_high"].to_list() == [0.5, 1.0]


def _psi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """DeLong's kernel for every (positive, negative) pair: 1 above, 1/2 tied, 0 below."""
    return (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])


def _delong_brute_force(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Return AUC a, AUC b and var(a - b) from DeLong et al. (1988), pair by pair."""
    v10, v01 = [], []
    for score in (a, b):
        kernel = _psi(score[y == 1], score[y == 0])  # m x n
        v10.append(kernel.mean(axis=1))  # placement of each positive among the negatives
        v01.append(kernel.mean(axis=0))  # and of each negative among the positives
    s = np.cov(np.array(v10)) / len(v10[0]) + np.cov(np.array(v01)) / len(v01[0])
    contrast = np.array([1.0, -1.0])
    return float(v10[0].mean()), float(v10[1].mean()), float(contrast @ s @ contrast)


@pytest.mark.parametrize("seed", range(30))
def test_auc_difference_matches_roc_auc_and_the_brute_force_delong(seed: int):
    y, a = _random_tied(seed)
    y[2:4] = [0, 1]  # DeLong's variance needs two of each class
    rng = np.random.default_rng(1000 + seed)
    b = np.round(0.6 * a + rng.normal(0, 1, y.size), int(rng.integers(0, 2)))  # correlated, tied
    result = auc_difference(y, a, b)
    assert isinstance(result, AucDiff)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result.auc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    auc_a, auc_b, variance = _delong_brute_force(y, a, b)
    assert result.auc_a == pytest.approx(auc_a, abs=1e-12)
    assert result.diff == pytest.approx(auc_a - auc_b, abs=1e-12)
    assert result.se**2 == pytest.approx(variance, abs=1e-12)
    z = stats.norm.ppf(0.975)
    assert result.ci_low == pytest.approx(result.diff - z * result.se, abs=1e-12)
    assert result.ci_high == pytest.approx(result.diff + z * result.se, abs=1e-12)
    if result.se > 0:
        assert result.z == pytest.approx(result.diff / result.se, rel=1e-12)
        assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(result.z)), rel=1e-9)


def test_auc_difference_ci_covers_the_true_difference_at_the_nominal_rate():
    # Binormal scores with correlated unit noise: AUC = Phi(mu / sqrt(2)) for a shift mu of the
    # positives, so the true difference is known.
    rng = np.random.default_rng(0)
    mu_a, mu_b, rho, n, runs = 1.2, 0.9, 0.6, 300, 1000
    truth = stats.norm.cdf(mu_a / math.sqrt(2)) - stats.norm.cdf(mu_b / math.sqrt(2))
    noise = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=(runs, n))
    y = (rng.uniform(size=(runs, n)) < 0.3).astype(int)
    results = [
        auc_difference(y[k], mu_a * y[k] + noise[k, :, 0], mu_b * y[k] + noise[k, :, 1])
        for k in range(runs)
    ]
    covered = np.mean([r.ci_low <= truth <= r.ci_high for r in results])
    # 1000 runs: the share's standard error is about 0.007 around 0.95
    assert 0.93 <= covered <= 0.97
    # and DeLong's se estimates the spread of the difference across samples
    spread = np.std([r.diff for r in results])
    assert np.mean([r.se for r in results]) == pytest.approx(spread, rel=0.1)


def test_auc_difference_of_identical_scores_is_zero_with_p_one():
    y, score = _random_tied(4)
    result = auc_difference(y, score, score)  # warnings are errors: no 0/0 here
    assert result.diff == 0.0 and result.se == 0.0
    assert result.p_value == 1.0 and result.z == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.auc_a == result.auc_b == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_auc_difference_alpha_widens_the_interval():
    y, a = _random_tied(5)
    b = np.asarray(a)[::-1].copy()
    narrow, wide = auc_difference(y, a, b, alpha=0.2), auc_difference(y, a, b, alpha=0.01)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high
    assert narrow.se == wide.se and narrow.p_value == wide.p_value


# Eight customers, already in descending predicted uplift; rows 4 and 5 tie at 0.5, so the curves
# have no point at x = 5. Cumulative counts at each point, worked by hand:
#   x  N_t Y_t N_c Y_c   qini = Y_t - Y_c*N_t/N_c   uplift = (Y_t/N_t - Y_c/N_c) * x
#   1   1   1   0   0    1                          (1 - 0) * 1   = 1
#   2   1   1   1   0    1                          (1 - 0) * 2   = 2
#   3   2   2   1   0    2                          (1 - 0) * 3   = 3
#   4   2   2   2   1    2 - 1*2/2 = 1              (1 - 1/2) * 4 = 2
#   6   3   2   3   1    2 - 1*3/3 = 1              (2/3 - 1/3) * 6 = 2
#   7   4   3   3   1    3 - 1*4/3 = 5/3            (3/4 - 1/3) * 7 = 35/12
#   8   4   3   4   2    3 - 2*4/4 = 1              (3/4 - 2/4) * 8 = 2
HAND_UPLIFT = [0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.3, 0.1]
HAND_TREATMENT = [1, 0, 1, 0, 1, 0, 1, 0]
HAND_Y = [1, 0, 1, 1, 0, 0, 1, 1]
HAND_X = [0, 1, 2, 3, 4, 6, 7, 8]
HAND_QINI = [0, 1, 1, 2, 1, 1, 5 / 3, 1]
HAND_UPLIFT_CURVE = [0, 1, 2, 3, 2, 2, 35 / 12, 2]


def test_qini_and_uplift_curves_match_the_hand_table():
    x, q = qini_curve(HAND_Y, HAND_UPLIFT, HAND_TREATMENT)
    assert x.tolist() == HAND_X
    np.testing.assert_allclose(q, HAND_QINI, rtol=0, atol=1e-9)
    x, u = uplift_curve(HAND_Y, HAND_UPLIFT, HAND_TREATMENT)
    assert x.tolist() == HAND_X
    np.testing.assert_allclose(u, HAND_UPLIFT_CURVE, rtol=0, atol=1e-9)


def test_curves_do_not_depend_on_row_order():
    perm = np.random.default_rng(1).permutation(8)
    shuffled = [np.asarray(a)[perm] for a in (HAND_Y, HAND_UPLIFT, HAND_TREATMENT)]
    np.testing.assert_allclose(qini_curve(*shuffled)[1], HAND_QINI, atol=1e-9)
    np.testing.assert_allclose(uplift_curve(*shuffled)[1], HAND_UPLIFT_CURVE, atol=1e-9)


def test_uplift_at_k_on_the_hand_table():
    args = (HAND_Y, HAND_UPLIFT, HAND_TREATMENT)
    # top 3 overall: rows 0, 1, 2 -> treated {0, 2} respond 2/2, control {1} 0/1
    assert uplift_at_k(*args, k=3) == pytest.approx(1.0)
    # top 3 of each group: treated {0, 2, 4} 2/3, control {1, 3, 5} 1/3
    assert uplift_at_k(*args, k=3, strategy="by_group") == pytest.approx(1 / 3)
    # share 0.5 -> ceil(4) overall: treated {0, 2} 2/2, control {1, 3} 1/2
    assert uplift_at_k(*args, k=0.5) == pytest.approx(0.5)


def test_uplift_by_decile_on_the_hand_table():
    table = uplift_by_decile(HAND_Y, HAND_UPLIFT, HAND_TREATMENT, bins=4)
    assert table.columns == [
        "decile",
        "n_treatment",
        "n_control",
        "response_rate_treatment",
        "response_rate_control",
        "uplift",
    ]
    assert table["n_treatment"].to_list() == [1, 1, 1, 1]
    assert table["n_control"].to_list() == [1, 1, 1, 1]
    assert table["uplift"].to_list() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    # one treated customer only in a band -> control rate is null, not a division error
    one_sided = uplift_by_decile([1, 0, 0, 1], [4.0, 3.0, 2.0, 1.0], [1, 1, 0, 0], bins=4)
    assert one_sided["response_rate_control"][0] is None
    assert one_sided["uplift"][0] is None


def test_perfect_ordering_beats_random_in_auuc_and_qini():
    rng = np.random.default_rng(7)
    n = 2000
    treatment = rng.integers(0, 2, n)
    true_uplift = rng.uniform(-0.1, 0.4, n)
    y = (rng.uniform(size=n) < 0.1 + treatment * true_uplift).astype(int)
    random_score = rng.uniform(size=n)
    oracle = y * treatment - y * (1 - treatment)
    assert uplift_auc_score(y, true_uplift, treatment) > uplift_auc_score(
        y, random_score, treatment
    )
    assert qini_auc_score(y, true_uplift, treatment) > qini_auc_score(y, random_score, treatment)
    assert qini_auc_score(y, oracle, treatment) == pytest.approx(1.0)
    assert abs(uplift_auc_score(y, random_score, treatment)) < 0.2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: roc_auc([0, 1, 1], [0.1, 0.2]), "score has 2 values but y_true has 3"),
        (lambda: roc_auc([0, 2, 1], [0.1, 0.2, 0.3]), "y_true must hold only 0 and 1"),
        (lambda: roc_auc([], []), "y_true is empty"),
        (lambda: roc_auc([1, 1], [0.1, 0.2]), "y_true needs both classes"),
        (lambda: pr_auc([0, 0], [0.1, 0.2]), "y_true has no positives"),
        (lambda: ks_statistic([0, 1], [0.1, float("nan")]), "NaN or infinite"),
        (lambda: gains_table([0, 1], [1, 2], bins=0), "bins must be a positive int"),
        (lambda: calibration_table([0, 1], [0.5, 1.5]), r"prob must lie in \[0, 1\]"),
        (lambda: qini_curve([0, 1], [0.1, 0.2], [1, 1]), "treatment needs both groups"),
        (lambda: uplift_curve([0, 1], [0.1, 0.2], [1, 0, 1]), "treatment has 3 values"),
        (lambda: uplift_curve([0, 1], [0.1, 0.2], [1, 5]), "treatment must hold only 0 and 1"),
        (lambda: uplift_at_k(HAND_Y, HAND_UPLIFT, HAND_TREATMENT, k=9), "k=9 asks for 9"),
        (lambda: uplift_at_k(HAND_Y, HAND_UPLIFT, HAND_TREATMENT, k=1), "top 1 customers"),
        (lambda: uplift_at_k(HAND_Y, HAND_UPLIFT, HAND_TREATMENT, k=1.5), r"share must be"),
        (
            lambda: uplift_at_k(HAND_Y, HAND_UPLIFT, HAND_TREATMENT, strategy="first"),  # type: ignore[arg-type]
            "strategy must be",
        ),
        (lambda: auc_difference([0, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2]), "score_b has 2 values"),
        (lambda: auc_difference([0, 1], [[0.1, 0.2]], [0.1, 0.2]), "score_a must be a 1-d"),
        (lambda: auc_difference([1, 1], [0.1, 0.2], [0.1, 0.2]), "y_true needs both classes"),
        (lambda: auc_difference([0, 1, 1], [1, 2, 3], [1, 2, 3]), "at least 2 positives and 2"),
        (lambda: auc_difference([0, 0, 1, 1], [1, 2, 3, 4], [1, 2, 3, 4], alpha=0), "alpha must"),
    ],
)
def test_bad_input_raises_config_error(call, message: str):
    with pytest.raises(ConfigError, match=message):
        call()


def test_tables_are_polars():
    assert isinstance(gains_table([0, 1, 1], [0.1, 0.2, 0.3]), pl.DataFrame)

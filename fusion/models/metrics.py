"""Model metrics: ranking (AUC, KS, PR-AUC), gains and calibration, uplift (Qini, AUUC).

Two models judged on the same customers are compared with `auc_difference` (DeLong's paired test);
A/B test proportions and their intervals are `fusion.models.proportions`.

Vocabulary follows scikit-uplift: `*_curve` returns points, `*_auc_score` and `uplift_at_k` return
numbers. Every function is vectorised numpy (one sort, cumulative sums); none loops per row.

Tie handling, one rule throughout: customers with equal scores are never split by a curve or a
table. Curves take one point per distinct score (the end of each tie group, as scikit-learn's
`roc_curve` and sklift's `uplift_curve` do), and a decile is decided by the position of the first
member of a tie group in descending order, so a tie group lands whole in one decile (some deciles
may then be empty and are left out). Only `uplift_at_k`, which cuts at an exact count, breaks ties,
and it does so as sklift does: a stable ascending sort, reversed (later rows first).

Bad input (mismatched lengths, labels other than 0/1, empty arrays, a class or group missing)
raises `contracts.errors.ConfigError` naming the argument and what to pass instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import stats

from contracts.errors import ConfigError
from fusion.models.vectors import finite, one_per_row, zero_one

__all__ = [
    "AucDiff",
    "auc_difference",
    "calibration_table",
    "gains_table",
    "ks_statistic",
    "pr_auc",
    "qini_auc_score",
    "qini_curve",
    "roc_auc",
    "uplift_at_k",
    "uplift_auc_score",
    "uplift_by_decile",
    "uplift_curve",
]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# --- validation -------------------------------------------------------------------------------


def _binary(values: ArrayLike, name: str) -> IntArray:
    arr = one_per_row(values, name)
    if arr.size == 0:
        raise ConfigError(f"{name} is empty; pass at least one customer", setting=name)
    return zero_one(arr, name).astype(np.int64)


def _scores(values: ArrayLike, name: str, n: int, against: str) -> FloatArray:
    return finite(one_per_row(values, name, size=n, against=f"{against} has {n}"), name)


def _scored(y_true: ArrayLike, score: ArrayLike, name: str) -> tuple[IntArray, FloatArray]:
    y = _binary(y_true, "y_true")
    return y, _scores(score, name, y.size, "y_true")


def _both_classes(y: IntArray) -> tuple[int, int]:
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(
            f"y_true needs both classes, got {n_pos} positive(s) and {n_neg} negative(s); "
            "the metric is undefined on one class - evaluate on a larger sample",
            setting="y_true",
        )
    return n_pos, n_neg


def _uplift_inputs(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[IntArray, FloatArray, IntArray]:
    y = _binary(y_true, "y_true")
    u = _scores(uplift, "uplift", y.size, "y_true")
    t = _binary(treatment, "treatment")
    if t.size != y.size:
        raise ConfigError(
            f"treatment has {t.size} values but y_true has {y.size}; pass one flag per customer",
            setting="treatment",
        )
    n_t = int(t.sum())
    if n_t == 0 or n_t == t.size:
        raise ConfigError(
            f"treatment needs both groups, got {n_t} treated and {t.size - n_t} control; "
            "uplift is measured against a control group - include one",
            setting="treatment",
        )
    return y, u, t


# --- ranking ------------------------------------------------------------------------------------


def _tie_groups(score: FloatArray) -> tuple[IntArray, IntArray]:
    """Return the descending order and the sorted positions ending each tie group."""
    order = np.argsort(-score, kind="stable").astype(np.int64)
    ends = np.r_[np.flatnonzero(np.diff(score[order])), score.size - 1].astype(np.int64)
    return order, ends


def roc_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Return the area under the ROC curve; ties count one half (Mann-Whitney U).

    Args:
        y_true: 0/1 outcome per customer.
        score: model score per customer; higher means more likely 1.

    Returns:
        P(score of a random positive > score of a random negative) + 0.5 P(equal).

    References:
        Hanley, J. A. & McNeil, B. J. (1982). The meaning and use of the area under a receiver
        operating characteristic (ROC) curve. Radiology 143(1), 29-36.
    """
    y, s = _scored(y_true, score, "score")
    n_pos, n_neg = _both_classes(y)
    ranks = stats.rankdata(s, method="average")
    u = float(ranks[y == 1].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


@dataclass(frozen=True)
class AucDiff:
    """Two correlated ROC AUCs on the same customers, their difference a - b and its Wald CI."""

    auc_a: float
    auc_b: float
    diff: float
    se: float  # DeLong standard error of diff
    ci_low: float
    ci_high: float
    z: float
    p_value: float  # two-sided, H0: auc_a = auc_b


def auc_difference(
    y_true: ArrayLike, score_a: ArrayLike, score_b: ArrayLike, *, alpha: float = 0.05
) -> AucDiff:
    """Return AUC(a) - AUC(b) on the same customers with DeLong's paired (1 - alpha) CI and p-value.

    The two AUCs are correlated (same positives, same negatives), so their difference has a
    smaller variance than two independent AUCs would. DeLong's structural components are each
    positive's share of negatives scored below it (V10) and each negative's share of positives
    scored above it (V01), ties counting one half; var(diff) = var_i(V10_a - V10_b) / m +
    var_j(V01_a - V01_b) / n over the m positives and n negatives. Sun & Xu get the components
    from midranks, in O(N log N) instead of O(m n).

    Args:
        y_true: 0/1 outcome per customer; at least two of each.
        score_a: model a's score per customer (e.g. the fused model).
        score_b: model b's score per customer, same customers in the same order.
        alpha: 1 - confidence level; 0.05 gives a 95% interval.

    Returns:
        `AucDiff`. The CI is diff +/- z_{1 - alpha/2} * se. When se is 0 (e.g. identical
        scores) the CI is the point diff, z is 0 and p is 1 if diff is 0, else z is +/-inf and
        p is 0.

    References:
        DeLong, E. R., DeLong, D. M. & Clarke-Pearson, D. L. (1988). Comparing the areas under
        two or more correlated receiver operating characteristic curves: a nonparametric
        approach. Biometrics 44(3), 837-845.
        Sun, X. & Xu, W. (2014). Fast implementation of DeLong's algorithm for comparing the
        areas under correlated receiver operating characteristic curves. IEEE Signal Processing
        Letters 21(11), 1389-1393.
    """
    y = _binary(y_true, "y_true")
    scores = np.vstack(
        [
            _scores(score_a, "score_a", y.size, "y_true"),
            _scores(score_b, "score_b", y.size, "y_true"),
        ]
    )
    n_pos, n_neg = _both_classes(y)
    if n_pos < 2 or n_neg < 2:
        raise ConfigError(
            f"auc_difference needs at least 2 positives and 2 negatives for DeLong's variance, "
            f"got {n_pos} and {n_neg}; evaluate on a larger sample",
            setting="y_true",
        )
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}; 0.05 gives 95%", setting="alpha")
    pos, neg = y == 1, y == 0
    # Sun & Xu (2014): midranks in all rows (T_Z), among positives (T_X) and among
    # negatives (T_Y), one row per model.
    ranks = stats.rankdata(scores, method="average", axis=1)
    v10 = (ranks[:, pos] - stats.rankdata(scores[:, pos], method="average", axis=1)) / n_neg
    v01 = 1.0 - (ranks[:, neg] - stats.rankdata(scores[:, neg], method="average", axis=1)) / n_pos
    auc_a, auc_b = (float(a) for a in v10.mean(axis=1))
    # The contrast's variance taken straight from the component differences: the same as
    # [1, -1] S [1, -1]' of DeLong's covariance matrix S, but never negative from rounding.
    variance = float(
        np.var(v10[0] - v10[1], ddof=1) / n_pos + np.var(v01[0] - v01[1], ddof=1) / n_neg
    )
    se = math.sqrt(variance)
    diff = auc_a - auc_b
    half = float(stats.norm.ppf(1 - alpha / 2)) * se
    if se > 0:
        z = diff / se
        p_value = float(2 * stats.norm.sf(abs(z)))
    else:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p_value = 1.0 if diff == 0 else 0.0
    return AucDiff(auc_a, auc_b, diff, se, diff - half, diff + half, z, p_value)


def ks_statistic(y_true: ArrayLike, score: ArrayLike) -> float:
    """Return the Kolmogorov-Smirnov statistic: max |TPR - FPR| over all score cut-offs.

    Args:
        y_true: 0/1 outcome per customer.
        score: model score per customer.

    Returns:
        The largest gap between the cumulative shares of positives and of negatives, in [0, 1].

    References:
        Siddiqi, N. (2006). Credit Risk Scorecards, ch. 6. Wiley.
    """
    y, s = _scored(y_true, score, "score")
    n_pos, n_neg = _both_classes(y)
    order, ends = _tie_groups(s)
    tp = np.cumsum(y[order])[ends]
    fp = (ends + 1) - tp
    return float(np.max(np.abs(tp / n_pos - fp / n_neg)))


def pr_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Return average precision, sum over cut-offs of (R_n - R_{n-1}) * P_n, as scikit-learn.

    Args:
        y_true: 0/1 outcome per customer; at least one 1.
        score: model score per customer.

    Returns:
        Average precision in [0, 1]; equals `sklearn.metrics.average_precision_score`.

    References:
        Zhu, M. (2004). Recall, precision and average precision. University of Waterloo.
    """
    y, s = _scored(y_true, score, "score")
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ConfigError(
            "y_true has no positives; average precision is undefined - evaluate on a sample "
            "with at least one responder",
            setting="y_true",
        )
    order, ends = _tie_groups(s)
    tp = np.cumsum(y[order])[ends]
    precision = tp / (ends + 1)
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_gain * precision))


def _deciles(score: FloatArray, bins: int) -> IntArray:
    """Return 1..bins per customer, 1 = highest scores; a tie group shares its first's decile."""
    first_pos = stats.rankdata(-score, method="min").astype(np.int64) - 1
    return first_pos * bins // score.size + 1


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"bins must be a positive int, got {bins!r}; 10 gives deciles")


def gains_table(y_true: ArrayLike, score: ArrayLike, *, bins: int = 10) -> pl.DataFrame:
    """Return the gains and lift table, one row per non-empty score decile (1 = best scores).

    Args:
        y_true: 0/1 outcome per customer.
        score: model score per customer.
        bins: number of equal-count bands (10 = deciles).

    Returns:
        Columns `decile, customers, responders, response_rate, cum_customers, cum_responders,
        cum_gains` (share of all responders caught so far), `lift` (decile rate / overall rate)
        and `cum_lift`. Ties stay in one decile, so counts may differ from n / bins.

    References:
        Berry, M. & Linoff, G. (2004). Data Mining Techniques, 2nd ed., ch. 3 (lift and gains).
    """
    _check_bins(bins)
    y, s = _scored(y_true, score, "score")
    n, n_pos = y.size, int(y.sum())
    overall = n_pos / n
    frame = pl.DataFrame({"decile": _deciles(s, bins), "y": y})
    cum_customers = pl.col("customers").cum_sum()
    cum_responders = pl.col("responders").cum_sum()
    return (
        frame.group_by("decile")
        .agg(pl.len().cast(pl.Int64).alias("customers"), pl.col("y").sum().alias("responders"))
        .sort("decile")
        .with_columns(
            (pl.col("responders") / pl.col("customers")).alias("response_rate"),
            cum_customers.alias("cum_customers"),
            cum_responders.alias("cum_responders"),
            (cum_responders / n_pos if n_pos else pl.lit(0.0)).alias("cum_gains"),
        )
        .with_columns(
            (pl.col("response_rate") / overall if n_pos else pl.lit(None, pl.Float64)).alias(
                "lift"
            ),
            (
                pl.col("cum_responders") / pl.col("cum_customers") / overall
                if n_pos
                else pl.lit(None, pl.Float64)
            ).alias("cum_lift"),
        )
    )


def calibration_table(y_true: ArrayLike, prob: ArrayLike, *, bins: int = 10) -> pl.DataFrame:
    """Return predicted against observed rates, one row per non-empty equal-width bin of [0, 1].

    Args:
        y_true: 0/1 outcome per customer.
        prob: predicted probability per customer, in [0, 1].
        bins: number of equal-width bins. A probability on an inner edge goes in the lower bin,
            0 in the first and 1 in the last, as `calibration_curve` bins them.

    Returns:
        Columns `bin` (1..bins), `prob_low`, `prob_high`, `customers`, `mean_predicted`,
        `observed_rate`; as `sklearn.calibration.calibration_curve(strategy="uniform")`.

    References:
        Niculescu-Mizil, A. & Caruana, R. (2005). Predicting good probabilities with supervised
        learning. ICML.
    """
    _check_bins(bins)
    y, p = _scored(y_true, prob, "prob")
    if (p < 0).any() or (p > 1).any():
        raise ConfigError(
            "prob must lie in [0, 1]; pass calibrated probabilities, not raw scores or logits",
            setting="prob",
        )
    # scikit-learn's own edges and search (calibration.py): `p * bins` would differ on an edge,
    # both in the side it takes and where linspace's edge is not exactly k / bins (0.3 is not).
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], p).astype(np.int64)
    frame = pl.DataFrame(
        {"bin": index + 1, "prob_low": edges[index], "prob_high": edges[index + 1], "y": y, "p": p}
    )
    return (
        frame.group_by("bin")
        .agg(
            pl.col("prob_low").first(),
            pl.col("prob_high").first(),
            pl.len().cast(pl.Int64).alias("customers"),
            pl.col("p").mean().alias("mean_predicted"),
            pl.col("y").mean().alias("observed_rate"),
        )
        .sort("bin")
    )


# --- uplift -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cumulative:
    """Cumulative counts at the end of each tie group, customers sorted by descending uplift."""

    n_all: IntArray
    n_t: IntArray
    n_c: IntArray
    y_t: IntArray
    y_c: IntArray


def _cumulative(y: IntArray, u: FloatArray, t: IntArray) -> _Cumulative:
    order, ends = _tie_groups(u)
    ys, ts = y[order], t[order]
    n_t = np.cumsum(ts)[ends]
    y_t = np.cumsum(ys * ts)[ends]
    n_all = ends + 1
    return _Cumulative(n_all, n_t, n_all - n_t, y_t, np.cumsum(ys * (1 - ts))[ends])


def _divide(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> FloatArray:
    """a / b, with 0 where b == 0 (sklift's convention at the start of a curve)."""
    out = np.zeros(a.shape, dtype=np.float64)
    np.divide(a, b, out=out, where=b != 0)
    return out


def _from_origin(x: IntArray, v: FloatArray) -> tuple[IntArray, FloatArray]:
    return np.r_[0, x].astype(np.int64), np.r_[0.0, v]


def _uplift_points(y: IntArray, u: FloatArray, t: IntArray) -> tuple[IntArray, FloatArray]:
    c = _cumulative(y, u, t)
    return _from_origin(c.n_all, (_divide(c.y_t, c.n_t) - _divide(c.y_c, c.n_c)) * c.n_all)


def _qini_points(y: IntArray, u: FloatArray, t: IntArray) -> tuple[IntArray, FloatArray]:
    c = _cumulative(y, u, t)
    return _from_origin(c.n_all, c.y_t - c.y_c * _divide(c.n_t, c.n_c))


def _area(x: IntArray, v: FloatArray) -> float:
    return float(np.sum(np.diff(x) * (v[1:] + v[:-1]) / 2.0))


def _normalised_area(
    points: tuple[IntArray, FloatArray], perfect: tuple[IntArray, FloatArray]
) -> float:
    """(area under curve - random) / (area under perfect curve - random), as sklift."""
    x_perfect, v_perfect = perfect
    baseline = _area(np.array([0, x_perfect[-1]]), np.array([0.0, v_perfect[-1]]))
    best = _area(*perfect) - baseline
    if best == 0:
        raise ConfigError(
            "the perfect curve has no area above random (no responder separates the groups); "
            "the normalised score is undefined - evaluate on a larger sample",
            setting="y_true",
        )
    return (_area(*points) - baseline) / best


def uplift_curve(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[IntArray, FloatArray]:
    """Return the uplift curve points: (customers targeted, (r_t - r_c) * customers targeted).

    Customers are sorted by descending predicted uplift; one point per distinct uplift value, after
    a first point (0, 0). r_t and r_c are the response rates of the treated and control customers
    among those targeted (0 while a group is still empty), as sklift's `uplift_curve`.

    Args:
        y_true: 0/1 outcome per customer.
        uplift: predicted uplift per customer.
        treatment: 1 = treated (contacted), 0 = control.

    Returns:
        (x, y): integer counts of customers targeted, and the curve value at each.

    References:
        Gutierrez, P. & Gerardy, J.-Y. (2017). Causal Inference and Uplift Modelling: A Review of
        the Literature. PMLR 67, 1-13.
    """
    return _uplift_points(*_uplift_inputs(y_true, uplift, treatment))


def qini_curve(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[IntArray, FloatArray]:
    """Return the Qini curve points: (customers targeted, Y_t - Y_c * N_t / N_c).

    Y and N are cumulative responders and customers in each group among those targeted, sorted by
    descending predicted uplift; one point per distinct uplift value after (0, 0), as sklift.

    Args:
        y_true: 0/1 outcome per customer.
        uplift: predicted uplift per customer.
        treatment: 1 = treated (contacted), 0 = control.

    Returns:
        (x, y): integer counts of customers targeted, and the incremental responders at each.

    References:
        Radcliffe, N. J. (2007). Using control groups to target on predicted lift: Building and
        assessing uplift models. Direct Marketing Analytics Journal 1, 14-21.
    """
    return _qini_points(*_uplift_inputs(y_true, uplift, treatment))


def uplift_auc_score(y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """Return the normalised area under the uplift curve (AUUC): 1 = perfect, 0 = random.

    Area between the uplift curve and the random line (0, 0) -> (n, overall uplift * n), divided by
    the same area for the perfect ordering (sklift's `perfect_uplift_curve`).

    Args:
        y_true: 0/1 outcome per customer.
        uplift: predicted uplift per customer.
        treatment: 1 = treated, 0 = control.

    Returns:
        The normalised AUUC; negative when the ordering is worse than random.

    References:
        Gutierrez, P. & Gerardy, J.-Y. (2017). Causal Inference and Uplift Modelling: A Review of
        the Literature. PMLR 67, 1-13.
    """
    y, u, t = _uplift_inputs(y_true, uplift, treatment)
    control_responders = int(np.sum((y == 1) & (t == 0)))
    treated_non_responders = int(np.sum((y == 0) & (t == 1)))
    # sklift's perfect order: treated responders and control non-responders first, then the
    # larger of the two "harmful-looking" groups last.
    summand = y if control_responders > treated_non_responders else t
    perfect = 2 * (y == t) + summand
    return _normalised_area(_uplift_points(y, u, t), _uplift_points(y, perfect.astype(float), t))


def qini_auc_score(y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """Return the Qini coefficient: area between Qini curve and random line over the perfect one's.

    The perfect ordering puts treated responders first and control responders last (sklift's
    `perfect_qini_curve(negative_effect=True)`).

    Args:
        y_true: 0/1 outcome per customer.
        uplift: predicted uplift per customer.
        treatment: 1 = treated, 0 = control.

    Returns:
        The normalised Qini coefficient: 1 = perfect, 0 = random, negative = worse than random.

    References:
        Radcliffe, N. J. (2007). Using control groups to target on predicted lift: Building and
        assessing uplift models. Direct Marketing Analytics Journal 1, 14-21.
    """
    y, u, t = _uplift_inputs(y_true, uplift, treatment)
    perfect = (y * t - y * (1 - t)).astype(float)
    return _normalised_area(_qini_points(y, u, t), _qini_points(y, perfect, t))


def uplift_at_k(
    y_true: ArrayLike,
    uplift: ArrayLike,
    treatment: ArrayLike,
    *,
    k: float | int = 0.3,
    strategy: Literal["overall", "by_group"] = "overall",
) -> float:
    """Return the response rate of treated minus control among the top k by predicted uplift.

    Args:
        y_true: 0/1 outcome per customer.
        uplift: predicted uplift per customer.
        treatment: 1 = treated, 0 = control.
        k: a float in (0, 1] is a share (rounded up to whole customers), an int a count.
        strategy: "overall" takes the top k of all customers, then compares the groups within it;
            "by_group" takes the top k of the treated and the top k of the control separately.

    Returns:
        r_t - r_c among the customers taken. Ties in uplift are broken as sklift does (stable
        ascending sort, reversed), so the result is deterministic for a given row order.

    References:
        scikit-uplift `sklift.metrics.uplift_at_k`; Radcliffe (2007), see `qini_curve`.
    """
    y, u, t = _uplift_inputs(y_true, uplift, treatment)
    if strategy not in ("overall", "by_group"):
        raise ConfigError(
            f"strategy must be 'overall' or 'by_group', got {strategy!r}", setting="strategy"
        )
    if isinstance(k, np.integer):
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int | float):
        raise ConfigError(f"k must be a float share or an int count, got {k!r}", setting="k")
    if isinstance(k, float) and not 0 < k <= 1:
        raise ConfigError(f"k as a share must be in (0, 1], got {k}", setting="k")
    order = np.argsort(u, kind="stable")[::-1]
    ys, ts = y[order], t[order]

    def take(pool: int, group: str) -> int:
        n = math.ceil(pool * k) if isinstance(k, float) else k
        if not 1 <= n <= pool:
            raise ConfigError(
                f"k={k} asks for {n} customers but the {group} has {pool}; "
                f"pass k between 1 and {pool}, or a share in (0, 1]",
                setting="k",
            )
        return n

    if strategy == "overall":
        top = take(y.size, "sample")
        y_top, t_top = ys[:top], ts[:top]
        n_t = int(t_top.sum())
        if n_t == 0 or n_t == top:
            raise ConfigError(
                f"the top {top} customers hold {n_t} treated and {top - n_t} control, so one "
                "group's rate is undefined; raise k or use strategy='by_group'",
                setting="k",
            )
        return float(y_top[t_top == 1].mean() - y_top[t_top == 0].mean())
    y_treated, y_control = ys[ts == 1], ys[ts == 0]
    n_t = take(y_treated.size, "treatment group")
    n_c = take(y_control.size, "control group")
    return float(y_treated[:n_t].mean() - y_control[:n_c].mean())


def uplift_by_decile(
    y_true: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, *, bins: int = 10
) -> pl.DataFrame:
    """Return observed uplift per decile of predicted uplift (1 = highest predicted).

    Args:
        y_true: 0/1 outcome per customer.
        uplift: predicted uplift per customer.
        treatment: 1 = treated, 0 = control.
        bins: number of equal-count bands over all customers; ties stay in one band.

    Returns:
        Columns `decile, n_treatment, n_control, response_rate_treatment, response_rate_control,
        uplift` (treatment rate minus control rate); a rate is null where its group is empty.

    References:
        scikit-uplift `sklift.viz.plot_uplift_by_percentile`; Radcliffe (2007).
    """
    _check_bins(bins)
    y, u, t = _uplift_inputs(y_true, uplift, treatment)
    frame = pl.DataFrame({"decile": _deciles(u, bins), "y": y, "t": t})

    def rate(responders: pl.Expr, customers: str) -> pl.Expr:
        return pl.when(pl.col(customers) > 0).then(responders / pl.col(customers))

    return (
        frame.group_by("decile")
        .agg(
            pl.col("t").sum().alias("n_treatment"),
            (1 - pl.col("t")).sum().alias("n_control"),
            (pl.col("y") * pl.col("t")).sum().alias("_y_t"),
            (pl.col("y") * (1 - pl.col("t"))).sum().alias("_y_c"),
        )
        .sort("decile")
        .with_columns(
            rate(pl.col("_y_t"), "n_treatment").alias("response_rate_treatment"),
            rate(pl.col("_y_c"), "n_control").alias("response_rate_control"),
        )
        .with_columns(
            (pl.col("response_rate_treatment") - pl.col("response_rate_control")).alias("uplift")
        )
        .drop("_y_t", "_y_c")
    )

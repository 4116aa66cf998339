"""Judging uplift predictions and spending a contact budget with them.

`uplift_correlation` compares predicted with true uplift, where the truth is known (the synthetic
world). `budgeted_targeting` spends one budget (N contacts at a cost each) once per scoring
strategy - e.g. predicted uplift against a response score - and reports the incremental
conversions each buys, from the true uplift where it is known or estimated on a held-out A/B
test.

Bad input raises `contracts.errors.ConfigError` naming the argument and what to pass instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from contracts.errors import ConfigError
from fusion.models.booster import is_int
from fusion.models.proportions import two_proportion_diff
from fusion.models.vectors import finite, one_per_row, zero_one

__all__ = ["Budget", "TargetingResult", "budgeted_targeting", "uplift_correlation"]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _finite(
    values: ArrayLike, name: str, n: int | None = None, against: str = "the scores"
) -> FloatArray:
    return finite(one_per_row(values, name, size=n, against=f"{against} has {n}"), name)


def _labels(values: ArrayLike, name: str, n: int) -> FloatArray:
    arr = one_per_row(values, name, size=n, against=f"the scores have {n}")
    return zero_one(arr, name).astype(np.float64)


def uplift_correlation(
    predicted: ArrayLike,
    true: ArrayLike,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
) -> float:
    """Return the correlation of predicted with true uplift (Pearson, or Spearman's rank).

    Args:
        predicted: predicted uplift per customer.
        true: true uplift per customer (known only in a synthetic world).
        method: "pearson" for the linear correlation, "spearman" for the rank correlation, which
            is what targeting cares about.

    Returns:
        The correlation in [-1, 1].
    """
    p = _finite(predicted, "predicted")
    q = _finite(true, "true", p.size, "predicted")
    if method not in ("pearson", "spearman"):
        raise ConfigError(
            f"method must be 'pearson' or 'spearman', got {method!r}", setting="method"
        )
    for arr, name in ((p, "predicted"), (q, "true")):
        if arr.size < 2 or np.all(arr == arr[0]):
            raise ConfigError(
                f"{name} is constant over {arr.size} customer(s); a correlation needs variation "
                "- check the model was fitted, or pass more customers",
                setting=name,
            )
    if method == "spearman":
        p, q = stats.rankdata(p), stats.rankdata(q)
    return float(np.corrcoef(p, q)[0, 1])


@dataclass(frozen=True)
class TargetingResult:
    """What one strategy's budget buys: the customers chosen and their incremental conversions.

    `incremental_conversions` is the truth when `true_uplift` was given, else the A/B estimate;
    `value`, `net_value`, `roi` and `ratio` derive from it. The A/B fields are None without
    `y` and `treatment`; `ratio` is None without a baseline.
    """

    strategy: str
    contacts: int
    cost: float
    incremental_conversions: float
    value: float
    net_value: float
    roi: float  # net_value / cost; nan when contacts are free
    ratio: float | None  # incremental_conversions over the baseline strategy's
    true_incremental: float | None
    estimated_incremental: float | None
    estimated_ci: tuple[float, float] | None
    chosen: IntArray = field(repr=False, compare=False)  # row indices, ascending


def _top(score: FloatArray, k: int) -> IntArray:
    """Return the rows of the k highest scores, ascending; ties take later rows first.

    The tie rule is `metrics.uplift_at_k`'s (a stable ascending sort, reversed), found in O(n) with
    a partition instead of a full sort.
    """
    n = score.size
    kth = np.partition(score, n - k)[n - k]
    above = np.flatnonzero(score > kth)
    tied = np.flatnonzero(score == kth)
    return np.sort(np.r_[above, tied[tied.size - (k - above.size) :]]).astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """What a campaign can spend: N contacts, the cost of each, the value of a conversion.

    `contacts` is never clamped to the customers scored: a budget larger than the base is a
    mistake in the caller's arithmetic, and `budgeted_targeting` refuses it.
    """

    contacts: int
    cost_per_contact: float
    value_per_conversion: float

    def __post_init__(self) -> None:
        if not is_int(self.contacts) or self.contacts < 1:
            raise ConfigError(
                f"contacts must be an int between 1 and the number of customers scored, got "
                f"{self.contacts!r}; a share p of the base is round(p * n)",
                setting="contacts",
            )
        for name, money in (
            ("cost_per_contact", self.cost_per_contact),
            ("value_per_conversion", self.value_per_conversion),
        ):
            if not (math.isfinite(money) and money >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {money!r}", setting=name)

    @property
    def cost(self) -> float:
        """Return what the N contacts cost together."""
        return float(self.contacts * self.cost_per_contact)


def budgeted_targeting(
    scores: Mapping[str, ArrayLike],
    *,
    budget: Budget,
    true_uplift: ArrayLike | None = None,
    y: ArrayLike | None = None,
    treatment: ArrayLike | None = None,
    baseline: str | None = None,
    alpha: float = 0.05,
) -> dict[str, TargetingResult]:
    """Return, per strategy, what contacting its top `budget.contacts` customers buys.

    Each strategy ranks the same customers by its own score (e.g. predicted uplift, or a response
    propensity) and takes the top N. The incremental conversions of the chosen set come from
    `true_uplift` when known (its sum over the chosen), and/or are estimated on a held-out A/B
    test: (response rate of the treated - of the control) among the chosen, times N, with a Wald
    (1 - alpha) interval from `proportions.two_proportion_diff`.

    Args:
        scores: strategy name -> score per customer, higher = contact first; all the same length.
        budget: N contacts (at most the customers scored), cost per contact, value per
            incremental conversion.
        true_uplift: true uplift per customer, where known (the synthetic world).
        y: 0/1 outcome per customer of a held-out A/B test; needs `treatment`.
        treatment: 1 = treated, 0 = control in that test.
        baseline: a strategy name; each result's `ratio` is its incremental conversions over the
            baseline's (inf or nan when the baseline's are 0).
        alpha: 1 - confidence level of the A/B interval.

    Returns:
        strategy -> `TargetingResult`, in the order of `scores`.

    References:
        Radcliffe, N. J. (2007). Using control groups to target on predicted lift: Building and
        assessing uplift models. Direct Marketing Analytics Journal 1, 14-21.
    """
    ranked = _ranked(scores)
    n = next(iter(ranked.values())).size
    if budget.contacts > n:
        raise ConfigError(
            f"contacts must be an int between 1 and the {n} customers scored, got "
            f"{budget.contacts!r}; a share p of the base is round(p * n)",
            setting="contacts",
        )
    if baseline is not None and baseline not in ranked:
        raise ConfigError(
            f"baseline {baseline!r} is not a strategy; pass one of {sorted(ranked)} or None",
            setting="baseline",
        )
    truth, ab = _evidence(n, true_uplift, y, treatment)
    results: dict[str, TargetingResult] = {}
    for name, score in ranked.items():
        chosen = _top(score, int(budget.contacts))
        true_inc = None if truth is None else float(truth[chosen].sum())
        estimated, ci = (None, None) if ab is None else _ab_estimate(name, chosen, *ab, alpha)
        headline = true_inc if true_inc is not None else estimated
        assert headline is not None  # one of the two sources exists, checked by _evidence
        value, cost = headline * budget.value_per_conversion, budget.cost
        results[name] = TargetingResult(
            strategy=name,
            contacts=int(budget.contacts),
            cost=cost,
            incremental_conversions=headline,
            value=value,
            net_value=value - cost,
            roi=(value - cost) / cost if cost > 0 else math.nan,
            ratio=None,
            true_incremental=true_inc,
            estimated_incremental=estimated,
            estimated_ci=ci,
            chosen=chosen,
        )
    if baseline is not None:
        reference = results[baseline].incremental_conversions
        results = {
            name: replace(r, ratio=_ratio(r.incremental_conversions, reference))
            for name, r in results.items()
        }
    return results


def _ranked(scores: Mapping[str, ArrayLike]) -> dict[str, FloatArray]:
    """Return each strategy's scores as finite floats, refusing strategies of other lengths."""
    if not scores:
        raise ConfigError("scores is empty; pass at least one strategy", setting="scores")
    ranked = {name: _finite(s, f"scores[{name!r}]") for name, s in scores.items()}
    n = next(iter(ranked.values())).size
    for name, s in ranked.items():
        if s.size != n:
            raise ConfigError(
                f"scores[{name!r}] has {s.size} values but the first strategy has {n}; every "
                "strategy must score the same customers in the same order",
                setting="scores",
            )
    return ranked


def _evidence(
    n: int, true_uplift: ArrayLike | None, y: ArrayLike | None, treatment: ArrayLike | None
) -> tuple[FloatArray | None, tuple[FloatArray, FloatArray] | None]:
    """Return (true uplift, (y, treatment) of the A/B test), checked; at least one is given."""
    truth = None if true_uplift is None else _finite(true_uplift, "true_uplift", n)
    if (y is None) != (treatment is None):
        raise ConfigError(
            "pass y and treatment together (a held-out A/B test), or neither",
            setting="y" if y is None else "treatment",
        )
    ab = None
    if y is not None and treatment is not None:
        ab = (_labels(y, "y", n), _labels(treatment, "treatment", n))
    if truth is None and ab is None:
        raise ConfigError(
            "nothing to measure incremental conversions with; pass true_uplift (synthetic "
            "world) or y and treatment from a held-out A/B test",
            setting="true_uplift",
        )
    return truth, ab


def _ab_estimate(
    strategy: str, chosen: IntArray, y: FloatArray, t: FloatArray, alpha: float
) -> tuple[float, tuple[float, float]]:
    """Return (r_t - r_c) x N among the chosen customers of an A/B test, and its interval."""
    k = chosen.size
    yy, tt = y[chosen], t[chosen]
    n_t = int(tt.sum())
    if n_t in (0, k):
        raise ConfigError(
            f"strategy {strategy!r} chose {n_t} treated and {k - n_t} control customers of the "
            "A/B test, so the uplift among them cannot be estimated; raise contacts or "
            "evaluate on a larger test",
            setting="contacts",
        )
    diff = two_proportion_diff(
        int(yy[tt == 1].sum()), n_t, int(yy[tt == 0].sum()), k - n_t, alpha=alpha
    )
    return diff.diff * k, (diff.ci_low * k, diff.ci_high * k)


def _ratio(a: float, b: float) -> float:
    if b != 0:
        return a / b
    return math.nan if a == 0 else math.copysign(math.inf, a)

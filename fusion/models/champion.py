"""Champion against challenger: does a newly trained version beat the one scoring now?

Both versions score the same held-out customers (the challenger's test rows, which no version
trained on: the split is fixed per customer id). A scoring model is judged by the difference of
the two ROC AUCs with DeLong's paired interval (`fusion.models.metrics.auc_difference`); an
uplift model by the difference of the two Qini coefficients with a paired bootstrap interval
(`qini_difference`): the same resampled customers score both models in each draw.

The gate (`GateRule`) passes a challenger whose point estimate is better and whose interval's
lower end lies above minus a non-inferiority margin: better on these customers, and not
plausibly worse by more than the margin. A worse challenger never passes; one that only ties
does not either (retraining on the same data should not move CURRENT by itself).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from contracts.errors import ConfigError
from fusion.models import metrics

__all__ = ["GateRule", "Judgement", "QiniDiff", "judge_scores", "judge_uplift", "qini_difference"]

FloatArray = npt.NDArray[np.float64]
_BLOCK = 50  # bootstrap draws computed at once


@dataclass(frozen=True, kw_only=True)
class GateRule:
    """When a challenger may replace the champion."""

    auc_margin: float = 0.005  # non-inferiority margin of the AUC difference's lower bound
    qini_margin: float = 0.02  # the same for the Qini coefficient
    alpha: float = 0.05  # 1 - the interval's confidence
    draws: int = 400  # bootstrap draws of the Qini difference
    seed: int = 7

    def __post_init__(self) -> None:
        if not (self.auc_margin >= 0 and self.qini_margin >= 0 and 0 < self.alpha < 1):
            raise ConfigError(
                "a gate needs margins >= 0 and alpha in (0, 1); got "
                f"auc_margin={self.auc_margin}, qini_margin={self.qini_margin}, "
                f"alpha={self.alpha}",
                setting="gate",
            )
        if self.draws < 50:
            raise ConfigError(
                f"the Qini bootstrap needs at least 50 draws, got {self.draws}", setting="draws"
            )


@dataclass(frozen=True)
class Judgement:
    """The comparison of a challenger with the champion on the same held-out customers."""

    metric: Literal["auc", "qini"]
    method: str  # "DeLong" or "paired bootstrap (n draws)"
    rows: int
    challenger: float
    champion: float
    diff: float  # challenger - champion
    ci_low: float
    ci_high: float
    margin: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the judgement as JSON-ready values (non-finite numbers as None)."""
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in asdict(self).items()
        }

    def verdict(self) -> str:
        """Return the judgement in one line a reviewer reads."""
        word = "beats" if self.passed else "does not beat"
        return (
            f"the challenger {word} the champion on {self.rows:,} held-out customers: "
            f"{self.metric.upper()} {self.challenger:.4f} vs {self.champion:.4f}, difference "
            f"{self.diff:+.4f} (95% {self.method} interval {self.ci_low:+.4f} to "
            f"{self.ci_high:+.4f}; passes when the difference is > 0 and the interval's lower "
            f"end > -{self.margin:g})"
        )


def _passes(diff: float, low: float, margin: float) -> bool:
    return bool(diff > 0 and low > -margin)


def judge_scores(
    y: npt.ArrayLike, challenger: npt.ArrayLike, champion: npt.ArrayLike, rule: GateRule
) -> Judgement:
    """Return the AUC comparison of two scoring models on the same customers (DeLong)."""
    found = metrics.auc_difference(y, challenger, champion, alpha=rule.alpha)
    return Judgement(
        "auc", "DeLong", int(np.size(y)), found.auc_a, found.auc_b, found.diff,
        found.ci_low, found.ci_high, rule.auc_margin,
        _passes(found.diff, found.ci_low, rule.auc_margin),
    )  # fmt: skip


def judge_uplift(
    y: npt.ArrayLike,
    treatment: npt.ArrayLike,
    challenger: npt.ArrayLike,
    champion: npt.ArrayLike,
    rule: GateRule,
) -> Judgement:
    """Return the Qini comparison of two uplift models on the same A/B customers (bootstrap)."""
    found = qini_difference(
        y, treatment, challenger, champion, draws=rule.draws, alpha=rule.alpha, seed=rule.seed
    )
    return Judgement(
        "qini", f"paired bootstrap ({rule.draws} draws)", int(np.size(y)), found.qini_a,
        found.qini_b, found.diff, found.ci_low, found.ci_high, rule.qini_margin,
        _passes(found.diff, found.ci_low, rule.qini_margin),
    )  # fmt: skip


@dataclass(frozen=True)
class QiniDiff:
    """Two Qini coefficients on the same customers, their difference a - b and its interval."""

    qini_a: float
    qini_b: float
    diff: float
    ci_low: float
    ci_high: float
    draws: int


def qini_difference(
    y_true: npt.ArrayLike,
    treatment: npt.ArrayLike,
    uplift_a: npt.ArrayLike,
    uplift_b: npt.ArrayLike,
    *,
    draws: int = 400,
    alpha: float = 0.05,
    seed: int = 7,
) -> QiniDiff:
    """Return Qini(a) - Qini(b) with a paired percentile bootstrap interval.

    Each draw resamples the customers with replacement (multinomial counts, the same for both
    models) and recomputes both normalised Qini coefficients as `metrics.qini_auc_score` does,
    with the counts as weights: a weight-k row is k copies of it, so ties and the perfect curve
    are those of the resampled data. Vectorised: each ordering is sorted once and every draw is
    a row of a cumulative sum, never a loop over customers.

    References:
        Radcliffe, N. J. (2007). Using control groups to target on predicted lift: Building and
        assessing uplift models. Direct Marketing Analytics Journal 1, 14-21.
        Efron, B. & Tibshirani, R. J. (1993). An Introduction to the Bootstrap, ch. 13
        (percentile intervals). Chapman & Hall.
    """
    qa = metrics.qini_auc_score(y_true, uplift_a, treatment)  # checks every input
    qb = metrics.qini_auc_score(y_true, uplift_b, treatment)
    y = np.asarray(y_true, dtype=np.float64).ravel()
    t = np.asarray(treatment, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    u_a = np.asarray(uplift_a, np.float64).ravel()
    u_b = np.asarray(uplift_b, np.float64).ravel()
    perfect = y * t - y * (1.0 - t)
    parts = []
    # Draws in blocks, so memory is bounded by a block of draws x customers.
    for begin in range(0, draws, _BLOCK):
        weights = rng.multinomial(
            y.size, np.full(y.size, 1.0 / y.size), size=min(_BLOCK, draws - begin)
        ).astype(np.float64)
        best = _weighted_qini_area(y, t, perfect, weights)
        base = _random_area(y, t, weights)
        a = _weighted_qini_area(y, t, u_a, weights)
        b = _weighted_qini_area(y, t, u_b, weights)
        with np.errstate(invalid="ignore", divide="ignore"):
            parts.append((a - b) / (best - base))
    diff = np.concatenate(parts)
    diff = diff[np.isfinite(diff)]  # a draw without responders in an arm has no Qini
    if diff.size < draws // 2:
        raise ConfigError(
            f"only {diff.size} of {draws} bootstrap draws had responders in both arms; judge "
            "the uplift models on a larger A/B sample",
            setting="y_true",
        )
    low, high = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
    return QiniDiff(qa, qb, qa - qb, float(low), float(high), draws)


def _weighted_qini_area(
    y: FloatArray, t: FloatArray, score: FloatArray, weights: FloatArray
) -> FloatArray:
    """Return the area under the Qini curve of `score` for every row of `weights` (one draw)."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last row of each tie group
    w = weights[:, order]
    n_all = np.cumsum(w, axis=1)[:, ends]
    n_t = np.cumsum(w * t[order], axis=1)[:, ends]
    y_t = np.cumsum(w * (y * t)[order], axis=1)[:, ends]
    y_c = np.cumsum(w * (y * (1.0 - t))[order], axis=1)[:, ends]
    n_c = n_all - n_t
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c != 0)
    value = np.hstack([np.zeros((len(w), 1)), y_t - y_c * ratio])
    x = np.hstack([np.zeros((len(w), 1)), n_all])
    return np.sum(np.diff(x, axis=1) * (value[:, 1:] + value[:, :-1]) / 2.0, axis=1)


def _random_area(y: FloatArray, t: FloatArray, weights: FloatArray) -> FloatArray:
    """Return the area under the random line (0, 0) -> (n, incremental responders) per draw."""
    n = weights.sum(axis=1)
    n_t = weights @ t
    y_t, y_c = weights @ (y * t), weights @ (y * (1.0 - t))
    end = y_t - y_c * np.divide(n_t, n - n_t, out=np.zeros_like(n_t), where=n != n_t)
    return n * end / 2.0

"""The A/B test inside a campaign's readout: its planned size, its decision, the comparison and
power a reader may see, and the sample-ratio check.

The A/B test is the pilot and ab stages in scope (`fusion.campaigns.readout` documents the
rules). `judge_ab_test` takes the readout's per-customer frame (one row per customer in scope:
stage, arm, the success flag and the `COVARIATE` column) and its published `by_stage` breakdown
and margin, so every figure it returns for publication follows from published counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import polars as pl

from contracts.errors import ConfigError
from fusion.campaigns.adjustment import covariate_matrix, cuped
from fusion.campaigns.declaration import Campaign
from fusion.campaigns.sequential import SequentialTest
from fusion.campaigns.statistics import (
    Comparison,
    SampleRatio,
    SampleSize,
    achieved_power,
    compare,
    planned_size,
    stage_sample_ratio,
)

__all__ = [
    "AB_STAGES",
    "BREAKDOWN_COUNTS",
    "COVARIATE",
    "AbTest",
    "Status",
    "arm_totals",
    "judge_ab_test",
    "planned_sample",
]

AB_STAGES = ("pilot", "ab")
BREAKDOWN_COUNTS = ("n_treatment", "successes_treatment", "n_control", "successes_control")
COVARIATE = "covariate"  # the readout's column of the customer's pre-assignment score

Status = Literal["interim", "decided", "not judged"]


@dataclass(frozen=True)
class AbTest:
    """The A/B test's status and decision (verdicts), and its figures a reader may see: the
    comparison and power (None unless its counts are published), the sample-ratio check (None
    unless every stage's arm sizes are published) and its verdict (None when an arm is empty)."""

    status: Status
    decision: str | None
    comparison: Comparison | None
    power: float | None
    srm: SampleRatio | None
    srm_mismatch: bool | None


def planned_sample(campaign: Campaign, planned: SampleSize | tuple[int, int] | None) -> SampleSize:
    """Return the A/B test's planned size: `planned` as given, or from the declaration's power
    calculation (as the stage gate computes it) when None."""
    if isinstance(planned, SampleSize):
        return planned
    if planned is None:
        return planned_size(campaign)
    treatment, control = planned
    if min(treatment, control) < 1:
        raise ConfigError(
            f"planned must give positive treatment and control sizes, got {planned!r}",
            setting="planned",
        )
    return SampleSize(treatment, control, treatment + control, math.nan)


def arm_totals(success: str) -> list[pl.Expr]:
    """Return n_treatment, successes_treatment, n_control and successes_control."""
    treated = pl.col("arm") == "treatment"
    return [
        treated.sum().cast(pl.Int64).alias("n_treatment"),
        (treated & pl.col(success)).sum().cast(pl.Int64).alias("successes_treatment"),
        (~treated).sum().cast(pl.Int64).alias("n_control"),
        (~treated & pl.col(success)).sum().cast(pl.Int64).alias("successes_control"),
    ]


def judge_ab_test(
    campaign: Campaign,
    customers: pl.DataFrame,
    published: tuple[pl.DataFrame, pl.DataFrame],
    *,
    stages: tuple[str, ...],
    planned: SampleSize,
    alpha: float,
    sequential: Mapping[str, SequentialTest],
    expected_control_share: float | None,
) -> AbTest:
    """Return the A/B test of the readout; `published` is its (by_stage, margin) pair."""
    by_stage, margin = published
    status, decision = _judge(campaign, customers, stages, planned, alpha, sequential)
    comparison = _published_ab(by_stage, margin, stages, alpha)
    power = None
    if comparison is not None:
        power = achieved_power(
            baseline_rate=campaign.stages.ab.baseline_rate,
            minimum_detectable_effect=campaign.stages.ab.minimum_detectable_effect,
            n_treatment=comparison.n_t,
            n_control=comparison.n_c,
            alpha=alpha,
        )
    srm, mismatch = _sample_ratio(campaign, customers, by_stage, expected_control_share)
    return AbTest(status, decision, comparison, power, srm, mismatch)


def _judge(
    campaign: Campaign,
    customers: pl.DataFrame,
    stages: tuple[str, ...],
    planned: SampleSize,
    alpha: float,
    sequential: Mapping[str, SequentialTest],
) -> tuple[Status, str | None]:
    """Return the status of the A/B test (pilot + ab) and its decision.

    Sequential: decided "significant" at the first look that crossed the mSPRT boundary, else
    "not significant" once the planned size is reached. Fixed horizon: judged at the planned
    size, by the covariate-adjusted estimate when the size was planned with a correlation.
    """
    if "ab" not in stages:
        return "not judged", None
    success = campaign.objective.event
    ab = customers.filter(pl.col("stage").is_in(AB_STAGES))
    n_t, s_t, n_c, s_c = ab.select(arm_totals(success)).row(0)
    test = sequential.get("ab")
    if campaign.analysis == "sequential" and test is not None and test.crossed_at is not None:
        return "decided", "significant"
    if n_t < planned.treatment or n_c < planned.control or min(n_t, n_c) < 1:
        return "interim", None
    if campaign.analysis == "sequential":
        return "decided", "not significant"
    x = covariate_matrix(ab, [COVARIATE])
    if campaign.stages.ab.covariate_correlation > 0 and x is not None and min(n_t, n_c) > 1:
        adjusted = cuped(ab[success].cast(pl.Float64).to_numpy(), x,
                         (ab["arm"] == "treatment").to_numpy(), alpha=alpha).adjusted  # fmt: skip
        return "decided", "significant" if adjusted.p_value < alpha else "not significant"
    result = compare(int(s_t), int(n_t), int(s_c), int(n_c), alpha=alpha)
    return "decided", "significant" if result.significant() else "not significant"


def _published_ab(
    by_stage: pl.DataFrame, margin: pl.DataFrame, stages: tuple[str, ...], alpha: float
) -> Comparison | None:
    """Return the A/B test's comparison (pilot + ab) when its counts follow from published ones.

    They do when the pilot and ab rows are published, or when the margin and the full row are
    (the A/B counts are then their difference).
    """
    rows = {row["stage"]: row for row in by_stage.iter_rows(named=True)}
    counts: list[int] = []
    for name in BREAKDOWN_COUNTS:
        parts = [rows[s][name] for s in AB_STAGES if s in rows]
        full = rows["full"][name] if "full" in rows else 0
        total = margin[name][0]
        if parts and all(p is not None for p in parts):
            counts.append(sum(parts))
        elif total is not None and full is not None:
            counts.append(total - full)
        else:
            return None
    n_t, s_t, n_c, s_c = counts
    if "ab" not in stages or min(n_t, n_c) < 1:
        return None
    return compare(s_t, n_t, s_c, n_c, alpha=alpha)


def _sample_ratio(
    campaign: Campaign,
    customers: pl.DataFrame,
    by_stage: pl.DataFrame,
    expected_control_share: float | None,
) -> tuple[SampleRatio | None, bool | None]:
    """Return the sample-ratio check (None unless every stage's arm sizes are published), and
    its verdict (None when an arm is empty)."""
    check = stage_sample_ratio(campaign, customers, expected_control_share)
    if check is None:
        return None, None
    published = by_stage.select(pl.col("n_treatment", "n_control").is_not_null().all()).row(0)
    return (check if all(published) else None), check.mismatch

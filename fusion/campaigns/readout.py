"""A campaign's result against its control: arms, funnel, lift, money, breakdowns, k-anonymised.

`read_out` takes a campaign's assignments and outcome events (polars):

    assignments   campaign_id str, customer_id i64, stage str (whitelist|pilot|ab|full),
                  arm str (treatment|control), branch_id str, decile i8 (null: no score),
                  stratum str, segment str (null: none), assigned_at datetime (naive UTC)
    events        campaign_id str, customer_id i64, event str (one of EVENTS), amount f64
                  (converted only, else null), occurred_at datetime (naive UTC)

and returns a `Readout`. What counts:

- The rows of the campaign (campaign_id = the declaration's name) in the stages asked for
  (default pilot, ab and full). Whitelist rows, and the declaration's whitelist customers in any
  stage, never count: they are named test customers, not a sample.
- An event counts when it happened at or after the customer's assignment; customers are
  counted once per event however many times it was reported. Success is the declaration's
  `objective.event`.
- Lift: absolute (difference of success rates, Newcombe CI), relative (their ratio, Katz CI),
  the pooled z-test's p-value (`fusion.campaigns.statistics.compare`) over every stage in scope.
  Stages with different control shares are pooled as they are; read `by_stage` when their rates
  differ.
- Money. Incremental successes = diff x treated customers (with the diff's CI); incremental
  value = incremental successes x `objective.value`: the declared value, the one planning and
  arbitration priced the campaign with. When converted events carry amounts, the amount-based
  estimate (mean amount per customer treated - control) x treated customers is reported beside
  it as `amount`, not used for ROI. Cost = delivered events of the treatment arm x
  `objective.cost_per_contact`; ROI = (incremental value - cost) / cost, None when cost is 0.
- The A/B test is the pilot and ab stages in scope: both split at the declared control share,
  and the stage gate counts both toward the planned size (`planned`, from the declaration's
  power calculation unless given). Fixed horizon (see `fusion.campaigns.statistics`): until
  both arms reach the planned size, `status` is "interim" and `decision` None; then "decided"
  and "significant" or "not significant" at alpha (the declared `stages.ab.alpha` unless
  given). Without the ab stage in scope, "not judged". `power` is `achieved_power` at the
  declared effect with the A/B arms' sizes.
- Sample-ratio check: chi-square goodness of fit of the arms in scope against the split the
  assignment rule gives: c x n control customers of each stage's n (to within one: systematic
  sampling over the strata, `fusion.campaigns.assignment`), c the stage's control share (the
  declared `control_share` for pilot and ab, `full_control_share` for full); or against
  `expected_control_share` when given.
- Adjusted (`fusion.campaigns.adjustment`): success by the `covariates` score (CUPAC), each
  `metrics` amount by its pre-period (CUPED), unadjusted beside adjusted and stratified, with
  the variance reduction and the control it saved. With `stages.ab.covariate_correlation` > 0
  the fixed-horizon decision reads the adjusted estimate (the size was planned for it).
- Sequential (`fusion.campaigns.sequential`): the A/B test's and the full launch's weekly looks
  with the mSPRT boundary and always-valid p-value; with `analysis = "sequential"` the A/B
  test is decided "significant" at the first crossing, "not significant" at the planned size.

Privacy. No customer id leaves this module. Every published count passes
`fusion.reports.disclosure.suppress` with k (default 10): the arms table (customers per arm and
per event, with the differences a reader could take: customers without an event, and between
funnel steps that nest), then `by_stage`, `by_branch`, `by_decile` and `by_segment` against the
arms table as their published margin, so a withheld cell cannot come back by subtraction. A
figure computed from counts is published only when those counts are published or derivable from
published ones: the lift and money from the arms table, the A/B comparison and power from
`by_stage`, the sample-ratio figures when every stage's arm sizes are published (else only the
verdict), adjusted figures and looks over arms of at least k. The decision is a verdict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from contracts.errors import CampaignError, ConfigError
from fusion.campaigns.ab_test import (
    BREAKDOWN_COUNTS,
    COVARIATE,
    Status,
    arm_totals,
    judge_ab_test,
    planned_sample,
)
from fusion.campaigns.adjustment import Adjusted, adjusted_readouts, with_covariate
from fusion.campaigns.declaration import EVENTS, Campaign
from fusion.campaigns.sequential import SequentialTest, stage_tests
from fusion.campaigns.statistics import (
    Comparison,
    SampleRatio,
    SampleSize,
    compare,
    json_ready,
)
from fusion.reports.campaign import PLOT_FILES, campaign_page, long_frame
from fusion.reports.disclosure import DEFAULT_K, Layout, check_k, suppress
from matcher.atomic import atomic_path, write_atomic

__all__ = [
    "ARMS",
    "ASSIGNMENT_COLUMNS",
    "BREAKDOWNS",
    "COVARIATE",
    "EVENT_FRAME_COLUMNS",
    "RATES",
    "READOUT_STAGES",
    "Incremental",
    "Readout",
    "read_out",
    "write_readout",
]

READOUT_STAGES = ("pilot", "ab", "full")
ARMS = ("treatment", "control")
ASSIGNMENT_COLUMNS = (
    *("campaign_id", "customer_id", "stage", "arm", "branch_id", "decile", "stratum"),
    *("segment", "assigned_at"),
)
EVENT_FRAME_COLUMNS = ("campaign_id", "customer_id", "event", "amount", "occurred_at")
"""The customers' column holding the covariate: a propensity score fixed before assignment."""
# The arms table's rates: customers with the event / customers of the arm.
RATES = {
    "contact_rate": "contacted",
    "reach_rate": "reached",
    "response_rate": "responded",
    "conversion_rate": "converted",
}
# Breakdown table name -> the assignment column it groups by.
BREAKDOWNS = {
    "by_stage": "stage",
    "by_branch": "branch_id",
    "by_decile": "decile",
    "by_segment": "segment",
}
_LIFT = ("lift", "lift_low", "lift_high")


@dataclass(frozen=True)
class Incremental:
    """What the treatment added: successes, their value, cost and ROI (None: withheld or n/a).

    `successes` = (rate_t - rate_c) x treated customers, with the difference's CI; `value` =
    successes x the declared value; `amount` = the amount-based estimate (None without amounts);
    `cost` = delivered treatment contacts x cost per contact; `roi` = (value - cost) / cost.
    """

    successes: float | None = None
    successes_low: float | None = None
    successes_high: float | None = None
    value: float | None = None
    value_low: float | None = None
    value_high: float | None = None
    amount: float | None = None
    cost: float | None = None
    roi: float | None = None
    roi_low: float | None = None
    roi_high: float | None = None


@dataclass(frozen=True)
class Readout:
    """A campaign's k-anonymised result against its control (see the module docstring).

    `arms`: one row per arm: arm, n, one count per event (customers), the rates of `RATES`,
    `success_rate`, `amount` (sum over converted events; null without amounts), then
    `suppressed_cells` and `suppressed`. `breakdowns`: `BREAKDOWNS` tables, each the group
    column, n / successes / rate per arm, lift = rate_t - rate_c with lift_low / lift_high
    (Newcombe), `suppressed_cells`, `suppressed`. A withheld cell is null.
    """

    campaign: str
    stages: tuple[str, ...]
    success_event: str
    value_per_success: float
    cost_per_contact: float
    minimum_detectable_effect: float
    k: int
    alpha: float
    arms: pl.DataFrame
    comparison: Comparison | None
    incremental: Incremental
    planned: SampleSize
    ab: Comparison | None
    power: float | None
    status: Status
    decision: str | None
    srm: SampleRatio | None
    srm_mismatch: bool | None
    breakdowns: dict[str, pl.DataFrame] = field(default_factory=dict)
    analysis: str = "fixed_horizon"
    adjusted: tuple[Adjusted, ...] = ()
    sequential: dict[str, SequentialTest] = field(default_factory=dict)

    def arms_frame(self) -> pl.DataFrame:
        """Return the arms table (suppressed cells null)."""
        return self.arms

    def breakdown_frames(self) -> dict[str, pl.DataFrame]:
        """Return the breakdown tables by name (suppressed cells null)."""
        return dict(self.breakdowns)

    def funnel_frame(self) -> pl.DataFrame:
        """Return the funnel, one row per arm and event: customers and their share of the arm."""
        rows = [
            {
                "arm": arm["arm"],
                "event": event,
                "customers": arm[event],
                "share": (arm[event] / arm["n"] if arm[event] is not None and arm["n"] else None),
            }
            for arm in self.arms.iter_rows(named=True)
            for event in EVENTS
        ]
        schema = {"arm": pl.String, "event": pl.String, "customers": pl.Int64, "share": pl.Float64}
        return pl.DataFrame(rows, schema=schema)

    def horizon(self) -> str:
        """Return where the A/B test stands (fixed horizon or sequential), in words."""
        if self.analysis == "sequential":
            test = self.sequential.get("ab")
            if self.status == "not judged" or test is None:
                return "not judged: the ab stage is not in this readout"
            return f"sequential (mSPRT, weekly looks): {test.summary()}"
        planned = self.planned
        size = (
            f"{planned.treatment:,} per arm"
            if planned.treatment == planned.control
            else f"{planned.treatment:,} treated and {planned.control:,} control"
        )
        if self.status == "interim":
            return f"interim: fixed horizon, judged at {size}"
        if self.status == "not judged":
            return "not judged: the ab stage is not in this readout"
        return f"decided at the fixed horizon of {size}: {self.decision}"

    def to_dict(self) -> dict[str, Any]:
        """Return the readout as JSON-ready data (no NaN or infinity: None instead)."""
        return json_ready(
            {
                "campaign": self.campaign,
                "stages": list(self.stages),
                "analysis": self.analysis,
                "objective": {
                    "event": self.success_event,
                    "value": self.value_per_success,
                    "cost_per_contact": self.cost_per_contact,
                },
                "k": self.k,
                "alpha": self.alpha,
                "status": self.status,
                "decision": self.decision,
                "horizon": self.horizon(),
                "planned": asdict(self.planned),
                "minimum_detectable_effect": self.minimum_detectable_effect,
                "ab": None if self.ab is None else self.ab.to_dict(),
                "power": self.power,
                "sample_ratio": {
                    "mismatch": self.srm_mismatch,
                    "check": None if self.srm is None else self.srm.to_dict(),
                },
                "comparison": None if self.comparison is None else self.comparison.to_dict(),
                "incremental": asdict(self.incremental),
                "arms": self.arms.to_dicts(),
                "funnel": self.funnel_frame().to_dicts(),
                "breakdowns": {name: t.to_dicts() for name, t in self.breakdowns.items()},
                "adjusted": [a.to_dict() for a in self.adjusted],
                "sequential": {name: t.to_dict() for name, t in self.sequential.items()},
            }
        )

    def long_frame(self) -> pl.DataFrame:
        """Return arms, breakdowns and summary figures in one long table
        (`fusion.reports.campaign.long_frame`)."""
        return long_frame(self)


def read_out(
    campaign: Campaign,
    assignments: pl.DataFrame,
    events: pl.DataFrame,
    *,
    planned: SampleSize | tuple[int, int] | None = None,
    k: int = DEFAULT_K,
    alpha: float | None = None,
    stages: Sequence[str] = READOUT_STAGES,
    expected_control_share: float | None = None,
    covariates: pl.DataFrame | None = None,
    metrics: pl.DataFrame | None = None,
) -> Readout:
    """Return the campaign's k-anonymised readout against its control.

    Args:
        campaign: the declaration (objective, shares, the A/B test's power calculation).
        assignments: the campaign's assignment rows (columns `ASSIGNMENT_COLUMNS`).
        events: outcome events (columns `EVENT_FRAME_COLUMNS`); other campaigns' are ignored.
        planned: the A/B test's planned size (a SampleSize or (treatment, control)); None
            computes it from the declaration as the stage gate does.
        k: no published cell describes fewer customers (nor can be derived to).
        alpha: the test's two-sided level; None takes the declared `stages.ab.alpha`.
        stages: the stages read out, a subset of `READOUT_STAGES`.
        expected_control_share: the control share the sample-ratio check expects; None
            derives it from each stage's declared share and the assignment rule.
        covariates: customer_id and one column, named for what it is (e.g.
            "acquisition_score"): a score fixed before assignment (CUPAC: the platform's
            propensity of the objective); None: success is not adjusted.
        metrics: amount metrics (`fusion.campaigns.metrics.METRIC_SCHEMA`: customer_id,
            metric, value, pre_value), each read out adjusted by its pre-period (CUPED).

    Raises:
        ConfigError: bad k, alpha, stages, planned or expected_control_share.
        CampaignError: a frame lacks columns or holds values the readout cannot read, or the
            campaign has nobody assigned in the stages asked for.
    """
    check_k(k)
    scope_stages = _check_stages(stages)
    level = campaign.stages.ab.alpha if alpha is None else alpha
    if not 0 < level < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {level}; 0.05 is usual", setting="alpha")
    plan = planned_sample(campaign, planned)
    customers, covariate_name = with_covariate(
        _customers(campaign, assignments, events, scope_stages), covariates, COVARIATE
    )
    success = campaign.objective.event

    arms_raw = _arm_counts(customers, success)
    # Delivered contacts are events, not customers: they only price the cost, never published.
    # The headline (customers and successes per arm) is withheld last: a funnel step beside it
    # is withheld first when a small difference between the two must not be derivable.
    arms = suppress(
        arms_raw.drop("delivered_contacts"),
        _arms_layout(customers, success),
        k=k,
        keep=("n", success),
    )
    margin = _margin(arms, success)
    breakdowns = {
        name: _breakdown(customers, column, success, margin, k, level)
        for name, column in BREAKDOWNS.items()
    }
    comparison = _published_comparison(arms, success, level)
    truth = {arm: row for arm, row in zip(ARMS, arms_raw.iter_rows(named=True), strict=True)}
    incremental = _incremental(campaign, comparison, truth, arms, k)

    sequential = stage_tests(
        customers, [COVARIATE], stages=scope_stages,
        tau=campaign.stages.ab.minimum_detectable_effect, alpha=level, k=k,
    )  # fmt: skip
    ab = judge_ab_test(
        campaign, customers, (breakdowns["by_stage"], margin), stages=scope_stages, planned=plan,
        alpha=level, sequential=sequential, expected_control_share=expected_control_share,
    )  # fmt: skip
    adjusted: tuple[Adjusted, ...] = ()
    if comparison is not None:
        adjusted = adjusted_readouts(
            customers, metrics, success=success, covariate=COVARIATE,
            covariate_name=covariate_name, alpha=level, k=k,
        )  # fmt: skip
    return Readout(
        campaign=campaign.name,
        stages=scope_stages,
        success_event=success,
        value_per_success=campaign.objective.value,
        cost_per_contact=campaign.objective.cost_per_contact,
        minimum_detectable_effect=campaign.stages.ab.minimum_detectable_effect,
        k=k,
        alpha=level,
        arms=arms,
        comparison=comparison,
        incremental=incremental,
        planned=plan,
        ab=ab.comparison,
        power=ab.power,
        status=ab.status,
        decision=ab.decision,
        srm=ab.srm,
        srm_mismatch=ab.srm_mismatch,
        breakdowns=breakdowns,
        analysis=campaign.analysis,
        adjusted=adjusted,
        sequential=sequential if comparison is not None else {},
    )


def write_readout(readout: Readout, out_dir: Path) -> dict[str, Path]:
    """Return the paths written under `out_dir`: readout.json, readout.parquet, the page, PNGs.

    `readout.parquet` is `Readout.long_frame()`; the page and its plots come from
    `fusion.reports.campaign.campaign_page`. Each file is written whole (atomic rename).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = json.dumps(readout.to_dict(), indent=2, sort_keys=True, allow_nan=False)
    paths = {"json": write_atomic(out_dir / "readout.json", document + "\n")}
    parquet = out_dir / "readout.parquet"
    with atomic_path(parquet) as tmp:
        readout.long_frame().write_parquet(
            tmp, metadata={"campaign": readout.campaign, "k": str(readout.k)}
        )
    paths["parquet"] = parquet
    # The page goes last: its plots are drawn before it is renamed into place.
    paths["html"] = campaign_page(readout, out_dir)
    paths |= {name: out_dir / file for name, file in PLOT_FILES.items()}
    return paths


# -- inputs -----------------------------------------------------------------------------------


def _check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(stages))
    if isinstance(stages, str) or not chosen or not set(chosen) <= set(READOUT_STAGES):
        raise ConfigError(
            f"stages must be a non-empty list drawn from {', '.join(READOUT_STAGES)}, got "
            f"{stages!r}; whitelist customers never count",
            setting="stages",
        )
    return tuple(s for s in READOUT_STAGES if s in chosen)


def _require(frame: pl.DataFrame, columns: Sequence[str], what: str, campaign: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CampaignError(
            f"the {what} frame lacks {', '.join(missing)}; give the columns {', '.join(columns)}",
            campaign=campaign,
        )


def _unknown(values: pl.Series, allowed: Sequence[str], what: str, campaign: str) -> None:
    unknown = sorted(set(values.drop_nulls().unique().to_list()) - set(allowed))
    if unknown or values.null_count():
        shown = ", ".join(repr(v) for v in unknown[:5]) or "null"
        raise CampaignError(
            f"{what} must be one of {', '.join(allowed)}, found {shown}; fix the rows first",
            campaign=campaign,
        )


def _naive_utc(column: str, frame: pl.DataFrame) -> pl.Expr:
    """Return the datetime column as naive UTC (a zone-aware one is converted)."""
    dtype = frame.schema[column]
    expr = pl.col(column)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        expr = expr.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return expr.cast(pl.Datetime("us"))


def _customers(
    campaign: Campaign, assignments: pl.DataFrame, events: pl.DataFrame, stages: tuple[str, ...]
) -> pl.DataFrame:
    """Return one row per customer in scope: id, arm, stage, groups, assignment time, one flag
    per event, the first success's time, money."""
    name = campaign.name
    success = campaign.objective.event
    _require(assignments, ASSIGNMENT_COLUMNS, "assignments", name)
    _require(events, EVENT_FRAME_COLUMNS, "events", name)
    mine = assignments.filter(pl.col("campaign_id") == name)
    _unknown(mine["stage"], ("whitelist", *READOUT_STAGES), "assignments.stage", name)
    _unknown(mine["arm"], ARMS, "assignments.arm", name)
    scope = mine.filter(
        pl.col("stage").is_in(list(stages)),
        ~pl.col("customer_id").cast(pl.Int64).is_in(campaign.stages.whitelist),
    ).select(
        pl.col("customer_id").cast(pl.Int64),
        "stage",
        "arm",
        pl.col("branch_id").cast(pl.String),
        pl.col("decile").cast(pl.Int8),
        pl.col("stratum").cast(pl.String),
        pl.col("segment").cast(pl.String),
        _naive_utc("assigned_at", mine).alias("assigned_at"),
    )
    if scope.is_empty():
        raise CampaignError(
            f"campaign {name} has nobody assigned in {', '.join(stages)} (whitelist customers "
            "never count); plan a stage first or read out the stages it has",
            campaign=name,
        )
    if scope["customer_id"].n_unique() != scope.height:
        raise CampaignError(
            f"campaign {name} has customers assigned more than once in the assignments given; "
            "give one row per campaign and customer",
            campaign=name,
        )
    mine_events = events.filter(pl.col("campaign_id") == name)
    _unknown(mine_events["event"], EVENTS, "events.event", name)
    happened = (
        mine_events.select(
            pl.col("customer_id").cast(pl.Int64),
            "event",
            pl.col("amount").cast(pl.Float64),
            _naive_utc("occurred_at", mine_events).alias("occurred_at"),
        )
        .join(scope.select("customer_id", "assigned_at"), on="customer_id", how="inner")
        # An event before the assignment is not the campaign's doing.
        .filter(pl.col("occurred_at") >= pl.col("assigned_at"))
        .group_by("customer_id")
        .agg(
            *((pl.col("event") == e).any().alias(e) for e in EVENTS),
            delivered_contacts=(pl.col("event") == "delivered").sum().cast(pl.Int64),
            amount=pl.col("amount").filter(pl.col("event") == "converted").sum(),
            amounts=pl.col("amount").filter(pl.col("event") == "converted").count(),
            success_at=pl.col("occurred_at").filter(pl.col("event") == success).min(),
        )
    )
    return scope.join(happened, on="customer_id", how="left").with_columns(
        *(pl.col(e).fill_null(False) for e in EVENTS),
        pl.col("delivered_contacts", "amounts").fill_null(0),
        pl.col("amount").fill_null(0.0),
    )


# -- tables -----------------------------------------------------------------------------------


def _arm_counts(customers: pl.DataFrame, success: str) -> pl.DataFrame:
    """Return the true counts per arm (both arms, even an empty one), rates and amounts."""
    counts = customers.group_by("arm").agg(
        *(pl.col(e).sum().cast(pl.Int64).alias(e) for e in EVENTS),
        n=pl.len().cast(pl.Int64),
        delivered_contacts=pl.col("delivered_contacts").sum(),
        amount=pl.col("amount").sum(),
        amounts=pl.col("amounts").sum(),
    )
    frame = (
        pl.DataFrame({"arm": list(ARMS)})
        .join(counts, on="arm", how="left", maintain_order="left")
        .with_columns(pl.col("n", *EVENTS, "delivered_contacts", "amounts").fill_null(0))
    )
    return frame.select(
        "arm",
        "n",
        *EVENTS,
        *(_rate(event, "n").alias(rate) for rate, event in RATES.items()),
        _rate(success, "n").alias("success_rate"),
        # No amount reported is not an amount of 0.
        pl.when(pl.col("amounts") > 0).then(pl.col("amount")).alias("amount"),
        "delivered_contacts",
    )


def _rate(numerator: str, denominator: str) -> pl.Expr:
    """Return numerator / denominator, null where the denominator is 0."""
    return (
        pl.when(pl.col(denominator) > 0)
        .then(pl.col(numerator) / pl.col(denominator))
        .cast(pl.Float64)
    )


def _arms_layout(customers: pl.DataFrame, success: str) -> Layout:
    """Return the arms table's layout: customers without each event, and nested funnel steps.

    Where every customer with a later event also has an earlier one (contacted within
    delivered, converted within responded...), the difference of the two counts is a count of
    customers too, so it is protected like one.
    """
    nested_expr = [
        (pl.col(later) & ~pl.col(earlier)).sum().alias(f"{earlier}|{later}")
        for i, earlier in enumerate(EVENTS)
        for later in EVENTS[i + 1 :]
    ]
    strays = customers.select(nested_expr).row(0, named=True)
    pairs = [tuple(key.split("|")) for key, count in strays.items() if count == 0]
    complements = [(f"_without_{e}", "n", e) for e in EVENTS] + [
        (f"_{earlier}_not_{later}", earlier, later) for earlier, later in pairs
    ]
    return Layout(
        counts=("n", *EVENTS),
        complements=tuple(complements),
        sums=tuple((total, (part, name)) for name, total, part in complements),
        derived=(
            *((rate, (event, "n")) for rate, event in RATES.items()),
            ("success_rate", (success, "n")),
            ("amount", ("converted",)),
        ),
    )


def _margin(arms: pl.DataFrame, success: str) -> pl.DataFrame:
    """Return the arms table's published n and successes as the breakdowns' one-row margin."""
    row: dict[str, int | None] = {}
    for arm in arms.iter_rows(named=True):
        row[f"n_{arm['arm']}"] = arm["n"]
        row[f"successes_{arm['arm']}"] = arm[success]
    return pl.DataFrame([row], schema=dict.fromkeys(BREAKDOWN_COUNTS, pl.Int64))


_BREAKDOWN_LAYOUT = Layout(
    counts=BREAKDOWN_COUNTS,
    complements=tuple((f"_failures_{a}", f"n_{a}", f"successes_{a}") for a in ARMS),
    sums=tuple((f"n_{a}", (f"successes_{a}", f"_failures_{a}")) for a in ARMS),
    derived=(
        ("rate_treatment", ("successes_treatment", "n_treatment")),
        ("rate_control", ("successes_control", "n_control")),
        *((name, BREAKDOWN_COUNTS) for name in _LIFT),
    ),
)


def _breakdown(
    customers: pl.DataFrame,
    column: str,
    success: str,
    margin: pl.DataFrame,
    k: int,
    alpha: float,
) -> pl.DataFrame:
    """Return one breakdown: n, successes and rate per arm and the lift, per group, suppressed."""
    counts = customers.group_by(column).agg(arm_totals(success))
    if column == "stage":
        order = {stage: i for i, stage in enumerate(READOUT_STAGES)}
        counts = counts.sort(pl.col("stage").replace_strict(order, return_dtype=pl.Int8))
    else:
        counts = counts.sort(column, nulls_last=True)
    lifts = [_lift(row, alpha) for row in counts.select(BREAKDOWN_COUNTS).iter_rows()]
    frame = counts.select(
        column,
        "n_treatment",
        "successes_treatment",
        _rate("successes_treatment", "n_treatment").alias("rate_treatment"),
        "n_control",
        "successes_control",
        _rate("successes_control", "n_control").alias("rate_control"),
        *(
            pl.Series(name, [lift[i] for lift in lifts], dtype=pl.Float64)
            for i, name in enumerate(_LIFT)
        ),
    )
    return suppress(frame, _BREAKDOWN_LAYOUT, k=k, margin=margin)


def _lift(row: tuple[int, ...], alpha: float) -> tuple[float | None, ...]:
    """Return (diff, low, high) of one group, or Nones when an arm is empty."""
    n_t, s_t, n_c, s_c = row
    if n_t < 1 or n_c < 1:
        return (None, None, None)
    result = compare(s_t, n_t, s_c, n_c, alpha=alpha)
    return (result.diff, result.diff_ci_low, result.diff_ci_high)


# -- figures ----------------------------------------------------------------------------------


def _published_comparison(arms: pl.DataFrame, success: str, alpha: float) -> Comparison | None:
    """Return the comparison of the arms when their n and successes are all published."""
    rows = {row["arm"]: row for row in arms.iter_rows(named=True)}
    t, c = rows["treatment"], rows["control"]
    counts = (t[success], t["n"], c[success], c["n"])
    if any(v is None for v in counts):
        return None
    return compare(*counts, alpha=alpha)


def _incremental(
    campaign: Campaign,
    comparison: Comparison | None,
    truth: Mapping[str, Mapping[str, Any]],
    arms: pl.DataFrame,
    k: int,
) -> Incremental:
    """Return incremental successes, value, amount, cost and ROI, from published counts."""
    objective = campaign.objective
    treated = truth["treatment"]
    # Cost shows delivered contacts (events), not customers: withheld only when the delivered
    # customers it stands for number under k.
    cost = (
        treated["delivered_contacts"] * objective.cost_per_contact
        if treated["delivered"] >= k
        else None
    )
    if comparison is None:
        return Incremental(cost=cost)
    n_t = comparison.n_t
    successes = (comparison.diff * n_t, comparison.diff_ci_low * n_t, comparison.diff_ci_high * n_t)
    value = tuple(s * objective.value for s in successes)
    published = {row["arm"]: row for row in arms.iter_rows(named=True)}
    amount_t, amount_c = published["treatment"]["amount"], published["control"]["amount"]
    amount = (
        (amount_t / n_t - amount_c / comparison.n_c) * n_t
        if amount_t is not None and amount_c is not None
        else None
    )
    roi: tuple[float | None, ...] = (None, None, None)
    if cost is not None and cost > 0:
        roi = tuple((v - cost) / cost for v in value)
    s, v, r = successes, value, roi
    return Incremental(s[0], s[1], s[2], v[0], v[1], v[2], amount, cost, r[0], r[1], r[2])
